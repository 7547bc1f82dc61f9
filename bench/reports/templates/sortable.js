// Progressive enhancement: a click on a header sorts its table by that column (numbers by data-sort).
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("thead th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0];
      var up = th.dataset.dir !== "asc";
      th.dataset.dir = up ? "asc" : "desc";
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col], y = b.cells[col];
        var u = x.dataset.sort !== undefined ? x.dataset.sort : x.textContent;
        var v = y.dataset.sort !== undefined ? y.dataset.sort : y.textContent;
        var nu = parseFloat(u), nv = parseFloat(v);
        var c = (!isNaN(nu) && !isNaN(nv)) ? nu - nv : String(u).localeCompare(String(v));
        return up ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
