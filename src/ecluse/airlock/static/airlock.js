/* Écluse airlock: keyboard navigation of the review page (no external assets).
 * j or ArrowDown: next file; k or ArrowUp: previous file; f: next flagged cell of the
 * current file's table. Keys typed in a form field, or with a modifier, are left alone. */
(function () {
  "use strict";
  function files() { return Array.prototype.slice.call(document.querySelectorAll("section.files > article.file")); }
  function current(list) {
    var top = window.scrollY + 10, idx = -1;
    for (var i = 0; i < list.length; i++) {
      if (list[i].classList.contains("current")) { return i; }
    }
    for (var j = 0; j < list.length; j++) {
      if (list[j].getBoundingClientRect().top + window.scrollY <= top) { idx = j; }
    }
    return idx;
  }
  function go(list, i) {
    if (i < 0 || i >= list.length) { return; }
    list.forEach(function (el) { el.classList.remove("current"); });
    var el = list[i];
    el.classList.add("current");
    el.scrollIntoView({block: "start"});
    el.focus({preventScroll: true});
    if (history.replaceState) { history.replaceState(null, "", "#" + el.id); }
  }
  var flagIndex = -1;
  document.addEventListener("keydown", function (e) {
    if (e.altKey || e.ctrlKey || e.metaKey) { return; }
    var t = e.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable)) { return; }
    var list = files();
    if (!list.length) { return; }
    var i = current(list);
    if (e.key === "j" || e.key === "ArrowDown") { go(list, i + 1); flagIndex = -1; e.preventDefault(); }
    else if (e.key === "k" || e.key === "ArrowUp") { go(list, Math.max(0, i - 1)); flagIndex = -1; e.preventDefault(); }
    else if (e.key === "f") {
      var scope = i >= 0 ? list[i] : document;
      var cells = scope.querySelectorAll("td.flagged, th.flagged");
      if (!cells.length) { return; }
      flagIndex = (flagIndex + 1) % cells.length;
      jumpTo(cells[flagIndex]);
      e.preventDefault();
    }
  });
  function jumpTo(cell) {
    document.querySelectorAll(".target-cell").forEach(function (c) { c.classList.remove("target-cell"); });
    cell.classList.add("target-cell");
    cell.scrollIntoView({block: "center", inline: "center"});
  }
  /* a finding's link: scroll the preview to its cell and ring it */
  document.addEventListener("click", function (e) {
    var a = e.target.closest ? e.target.closest("a.jump") : null;
    if (!a) { return; }
    var cell = document.getElementById(a.getAttribute("href").slice(1));
    if (!cell) { return; }
    e.preventDefault();
    jumpTo(cell);
    if (history.replaceState) { history.replaceState(null, "", a.getAttribute("href")); }
  });
  /* the queue's filters apply when changed */
  document.addEventListener("change", function (e) {
    var f = e.target.form;
    if (f && f.id === "queue-filters") { f.submit(); }
  });
}());
