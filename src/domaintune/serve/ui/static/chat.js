/* The chat page: ask, stream the answer from /ui/api/chat (the same SSE chunks as /v1/chat/completions),
 * render it with the safe Markdown renderer, show citations, template/variant, and send thumbs feedback. */
(function () {
  'use strict';
  var C = window.dtConsole, md = window.dtMarkdown;
  var root = document.getElementById('chat');
  var transcript = document.getElementById('transcript');
  var form = document.getElementById('ask');
  var question = document.getElementById('question');
  var sendButton = document.getElementById('send');
  var sessionsOn = root.getAttribute('data-sessions') === 'on';
  var feedbackOn = root.getAttribute('data-feedback') === 'on';
  var history = [];
  var sessionId = new URLSearchParams(window.location.search).get('session');
  var answers = 0;

  function el(tag, cls, textContent) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (textContent !== undefined) { node.textContent = textContent; }
    return node;
  }

  function bubble(role) {
    var item = el('article', 'msg ' + role);
    item.appendChild(el('h2', 'who', C.t(role === 'user' ? 'you' : 'assistant')));
    var body = el('div', 'body');
    item.appendChild(body);
    transcript.appendChild(item);
    return { item: item, body: body };
  }

  function show(target, content, prefix) {
    while (target.firstChild) { target.removeChild(target.firstChild); }
    target.appendChild(md.render(content, prefix));
  }

  function addUser(content) {
    var b = bubble('user');
    var p = el('p'); p.textContent = content; b.body.appendChild(p);
  }

  function sources(b, citations, prefix) {
    if (!citations || !citations.length) { return; }
    var box = el('section', 'sources');
    box.appendChild(el('h3', null, C.t('sources')));
    var list = el('ol');
    citations.forEach(function (c) {
      var li = el('li'); li.id = prefix + '-' + c.n;
      var details = el('details', 'source');
      details.appendChild(el('summary', null, '[' + c.n + '] ' + (c.title || c.document_id)));
      details.appendChild(el('p', 'excerpt', c.excerpt || ''));
      var doc = el('p', 'doc'); doc.appendChild(document.createTextNode(C.t('document') + ': '));
      doc.appendChild(el('code', null, String(c.document_id)));
      details.appendChild(doc);
      li.appendChild(details); list.appendChild(li);
    });
    box.appendChild(list);
    b.item.appendChild(box);
    b.item.addEventListener('click', function (event) {
      var link = event.target.closest ? event.target.closest('a.cite') : null;
      if (!link) { return; }
      var target = document.getElementById(prefix + '-' + link.getAttribute('data-cite'));
      if (target) {
        event.preventDefault();
        var d = target.querySelector('details'); d.open = true; d.querySelector('summary').focus();
      }
    });
  }

  function meta(b, info) {
    var parts = [];
    if (info.template) { parts.push(C.t('template') + ': ' + info.template); }
    if (info.variant) { parts.push(C.t('variant') + ': ' + info.variant); }
    if (parts.length) { b.item.insertBefore(el('p', 'meta', parts.join(' · ')), b.body); }
  }

  function thumbs(b, requestId) {
    if (!feedbackOn || !requestId) { return; }
    var row = el('div', 'thumbs');
    [['up', '👍', 'thumbs_up'], ['down', '👎', 'thumbs_down']].forEach(function (spec) {
      var button = el('button', 'thumb', spec[1]);
      button.type = 'button'; button.setAttribute('aria-label', C.t(spec[2]));
      button.setAttribute('data-thumbs', spec[0]);
      button.addEventListener('click', function () {
        C.post('/ui/api/feedback', { request_id: requestId, thumbs: spec[0] }).then(function (r) {
          row.textContent = r.ok ? C.t('thanks') : C.t('error') + ' (' + r.status + ')';
        });
      });
      row.appendChild(button);
    });
    b.item.appendChild(row);
  }

  function parseEvents(buffer, onData) {
    var events = buffer.split(/\r?\n\r?\n/);
    var rest = events.pop();
    events.forEach(function (block) {
      var data = block.split(/\r?\n/).filter(function (l) { return l.indexOf('data:') === 0; })
        .map(function (l) { return l.slice(5).replace(/^ /, ''); }).join('\n');
      if (data) { onData(data); }
    });
    return rest;
  }

  function stream(response, b, prefix) {
    var reader = response.body.getReader(), decoder = new TextDecoder(), buffer = '';
    var state = { text: '', info: {}, id: null, error: null };
    function onData(data) {
      if (data === '[DONE]') { return; }
      var chunk = JSON.parse(data);
      if (chunk.error) { state.error = chunk.error.message; return; }
      state.id = state.id || chunk.id;
      ['citations', 'variant', 'template', 'session_id', 'review'].forEach(function (k) {
        if (chunk[k] !== undefined && chunk[k] !== null) { state.info[k] = chunk[k]; }
      });
      (chunk.choices || []).forEach(function (choice) {
        if (choice.delta && choice.delta.content) { state.text += choice.delta.content; }
      });
      show(b.body, state.text || C.t('thinking'), prefix);
    }
    function pump() {
      return reader.read().then(function (r) {
        if (r.done) { return state; }
        buffer = parseEvents(buffer + decoder.decode(r.value, { stream: true }), onData);
        return pump();
      });
    }
    return pump();
  }

  function listSession(id, title) {  // the new conversation joins the list without a reload
    var list = document.getElementById('session-list');
    if (!list) { return; }
    Array.prototype.slice.call(list.querySelectorAll('li.note')).forEach(function (n) { list.removeChild(n); });
    var li = el('li'), a = el('a', null, title.length > 40 ? title.slice(0, 40) + '…' : title);
    a.href = '?session=' + encodeURIComponent(id); a.setAttribute('data-session', id);
    a.setAttribute('aria-current', 'page');
    li.appendChild(a); list.appendChild(li);
  }

  function ensureSession(content) {
    if (!sessionsOn || sessionId) { return Promise.resolve(sessionId); }
    return C.post('/ui/api/sessions', {}).then(function (r) { return r.ok ? r.json() : null; }).then(function (j) {
      if (j && j.id) {
        sessionId = j.id;
        window.history.replaceState(null, '', '?session=' + encodeURIComponent(sessionId));
        listSession(sessionId, content);
      }
      return sessionId;
    });
  }

  function ask(content) {
    addUser(content);
    history.push({ role: 'user', content: content });
    answers += 1;
    var prefix = 'a' + answers + '-source';
    var b = bubble('assistant');
    b.item.setAttribute('aria-busy', 'true');
    show(b.body, C.t('thinking'), prefix);
    sendButton.disabled = true;
    return ensureSession(content).then(function (sid) {
      var body = { messages: history };
      if (sid) { body.session_id = sid; }
      return C.post('/ui/api/chat', body);
    }).then(function (response) {
      if (!response.ok) {
        return response.json().then(function (j) { throw new Error((j.error && j.error.message) || response.status); });
      }
      return stream(response, b, prefix);
    }).then(function (state) {
      if (state.error) { throw new Error(state.error); }
      history.push({ role: 'assistant', content: state.text });
      meta(b, state.info);
      sources(b, state.info.citations, prefix);
      thumbs(b, state.id);
      b.item.setAttribute('data-done', 'true');
    }).catch(function (err) {
      var p = el('p', 'error', C.t('error') + ': ' + err.message); p.setAttribute('role', 'alert');
      b.body.appendChild(p);
      b.item.setAttribute('data-done', 'error');
    }).then(function () {
      b.item.removeAttribute('aria-busy');
      sendButton.disabled = false;
      question.focus();
    });
  }

  function loadSession(id) {
    fetch('/ui/api/sessions/' + encodeURIComponent(id), { credentials: 'same-origin' }).then(function (r) {
      return r.ok ? r.json() : { messages: [] };
    }).then(function (j) {
      (j.messages || []).forEach(function (m) {
        if (m.role === 'user') { addUser(m.content); } else if (m.role === 'assistant') {
          answers += 1; var b = bubble('assistant'); show(b.body, m.content, 'a' + answers + '-source');
        }
        if (m.role === 'user' || m.role === 'assistant') { history.push({ role: m.role, content: m.content }); }
      });
    });
  }

  form.addEventListener('submit', function (event) {
    event.preventDefault();
    var content = question.value.trim();
    if (!content || sendButton.disabled) { return; }
    question.value = '';
    ask(content);
  });
  question.addEventListener('keydown', function (event) {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) { form.requestSubmit(); }
  });
  var fresh = document.getElementById('new-session');
  if (fresh) {
    fresh.addEventListener('click', function () { window.location.href = '/ui/chat'; });
  }
  if (sessionsOn && sessionId) { loadSession(sessionId); }
}());
