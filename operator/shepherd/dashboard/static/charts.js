// Each metric's measurements over time against its bounds, drawn with uPlot (vendored: uplot.LICENSE) from
// the JSON the page carries beside the table that lists the same values.
(function () {
  "use strict";
  function line(value, length) {
    var out = [];
    for (var i = 0; i < length; i++) {
      out.push(value);
    }
    return out;
  }
  function draw(root) {
    var blocks = root.querySelectorAll("figure.chart");
    for (var i = 0; i < blocks.length; i++) {
      var figure = blocks[i];
      var data = JSON.parse(figure.querySelector("script.chart-data").textContent);
      var n = data.at.length;
      var series = [{}, { label: "canary", stroke: "#0645ad", width: 2 }];
      var columns = [data.at, data.value];
      if (data.baseline.some(function (v) { return v !== null; })) {
        series.push({ label: "baseline", stroke: "#555", width: 2, dash: [4, 4] });
        columns.push(data.baseline);
      }
      if (data.max !== null && data.max !== undefined) {
        series.push({ label: "max", stroke: "#a00000", width: 1, dash: [8, 4] });
        columns.push(line(data.max, n));
      }
      if (data.min !== null && data.min !== undefined) {
        series.push({ label: "min", stroke: "#7a4b00", width: 1, dash: [8, 4] });
        columns.push(line(data.min, n));
      }
      var width = Math.min(720, figure.parentElement.clientWidth || 720);
      var plot = new window.uPlot({ width: width, height: 220, series: series }, columns, figure);
      plot.root.setAttribute("data-points", String(n));
    }
  }
  window.shepherdCharts = { draw: draw };
  document.addEventListener("DOMContentLoaded", function () {
    draw(document);
  });
})();
