/* A tiny, safe Markdown renderer for model output.
 * Nothing from the text ever becomes HTML: every piece is a DOM text node or an element built with
 * createElement from a fixed whitelist (p, h3-h5, ul, ol, li, pre, code, strong, em, a, br).
 * Links keep only http(s) and mailto targets; anything else (javascript:, data:, relative) stays text.
 * [n] becomes a link to citation n of the same answer. No HTML parsing of the text anywhere. */
(function () {
  'use strict';
  var SAFE_URL = /^(https?:\/\/|mailto:)[^\s]*$/i;
  var INLINE = /(`[^`\n]+`)|(\*\*[^*\n]+\*\*)|(\*[^*\s\n][^*\n]*\*)|(\[([^\]\n]+)\]\(([^)\s]+)\))|(\[(\d{1,3})\])/g;

  function el(tag, cls) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    return node;
  }

  function text(parent, s) { parent.appendChild(document.createTextNode(s)); }

  function inline(s, parent, prefix) {
    var re = new RegExp(INLINE.source, 'g');
    var last = 0, m;
    while ((m = re.exec(s)) !== null) {
      if (m.index > last) { text(parent, s.slice(last, m.index)); }
      if (m[1]) {
        var code = el('code'); code.textContent = m[1].slice(1, -1); parent.appendChild(code);
      } else if (m[2]) {
        var strong = el('strong'); inline(m[2].slice(2, -2), strong, prefix); parent.appendChild(strong);
      } else if (m[3]) {
        var em = el('em'); inline(m[3].slice(1, -1), em, prefix); parent.appendChild(em);
      } else if (m[4]) {
        if (SAFE_URL.test(m[6])) {
          var a = el('a'); a.href = m[6]; a.rel = 'noopener noreferrer nofollow'; a.target = '_blank';
          text(a, m[5]); parent.appendChild(a);
        } else {
          text(parent, m[0]);
        }
      } else if (m[7]) {
        var cite = el('a', 'cite'); cite.href = '#' + (prefix || 'source') + '-' + m[8];
        cite.setAttribute('data-cite', m[8]); text(cite, '[' + m[8] + ']'); parent.appendChild(cite);
      }
      last = re.lastIndex;
    }
    if (last < s.length) { text(parent, s.slice(last)); }
  }

  function render(source, prefix) {
    var root = document.createDocumentFragment();
    var lines = String(source).replace(/\r\n?/g, '\n').split('\n');
    var para = null, list = null, i = 0;
    function close() { para = null; list = null; }
    while (i < lines.length) {
      var line = lines[i];
      var fence = /^```/.test(line);
      var heading = /^(#{1,3})\s+(.*)$/.exec(line);
      var bullet = /^\s*[-*+]\s+(.*)$/.exec(line);
      var number = /^\s*\d{1,3}[.)]\s+(.*)$/.exec(line);
      if (fence) {
        close();
        var body = [];
        i += 1;
        while (i < lines.length && !/^```/.test(lines[i])) { body.push(lines[i]); i += 1; }
        var pre = el('pre'), code = el('code');
        code.textContent = body.join('\n'); pre.appendChild(code); root.appendChild(pre);
      } else if (heading) {
        close();
        var h = el('h' + (heading[1].length + 2)); inline(heading[2], h, prefix); root.appendChild(h);
      } else if (bullet || number) {
        var kind = bullet ? 'ul' : 'ol';
        if (!list || list.tagName.toLowerCase() !== kind) { para = null; list = el(kind); root.appendChild(list); }
        var li = el('li'); inline((bullet || number)[1], li, prefix); list.appendChild(li);
      } else if (!line.trim()) {
        close();
      } else {
        list = null;
        if (!para) { para = el('p'); root.appendChild(para); } else { para.appendChild(el('br')); }
        inline(line, para, prefix);
      }
      i += 1;
    }
    return root;
  }

  window.dtMarkdown = { render: render };
}());
