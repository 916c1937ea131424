/* Shared by every page: the CSRF token and UI strings the server put in <meta> tags. */
(function () {
  'use strict';
  function meta(name) {
    var node = document.querySelector('meta[name="' + name + '"]');
    return node ? node.getAttribute('content') : '';
  }
  var strings = {};
  try { strings = JSON.parse(meta('dt-strings') || '{}'); } catch (e) { strings = {}; }
  window.dtConsole = {
    csrf: meta('csrf-token'),
    t: function (key) { return strings[key] || key; },
    post: function (url, body) {
      return fetch(url, {
        method: 'POST', credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': meta('csrf-token') },
        body: JSON.stringify(body || {})
      });
    }
  };
}());
