// Draw each Vega-Lite spec into the element chart-<key>. Actions are off: the default menu
// offers to send the spec (the page's figures) to the online Vega editor.
(function () {
  var specs = JSON.parse(document.getElementById("vega-specs").textContent);
  Object.keys(specs).forEach(function (key) {
    var el = document.getElementById("chart-" + key);
    if (!el) return;
    vegaEmbed(el, specs[key], { actions: false, renderer: "svg" }).catch(function (err) {
      el.textContent = "Chart error: " + (err.message || err);
    });
  });
})();
