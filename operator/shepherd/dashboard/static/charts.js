// Each metric's measurements over time against its bounds, drawn with uPlot (vendored: uplot.LICENSE) from
// the JSON the page carries beside the table that lists the same values.
(function () {
  "use strict";
  var STYLES = {
    canary: { stroke: "#0645ad", dash: [] },
    stable: { stroke: "#0a5c0a", dash: [] },
    baseline: { stroke: "#555", dash: [4, 4] },
  };
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
      var series = [{}];
      var columns = [data.at];
      var roles = Object.keys(data.series);
      for (var r = 0; r < roles.length; r++) {
        var style = STYLES[roles[r]] || STYLES.canary;
        series.push({ label: roles[r], stroke: style.stroke, width: 2, dash: style.dash, spanGaps: false });
        columns.push(data.series[roles[r]]);
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
