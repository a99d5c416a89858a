/* The demo shop's "Buy" button: a conversion, sent only if the visitor allowed it. */
document.getElementById("buy").addEventListener("click", function () {
  var sent = window.pixelgate && window.pixelgate.track("conversion",
    { value: "79.00", currency: "EUR" });
  this.textContent = sent ? "Bought: the conversion is counted" : "Bought (not counted: no consent)";
});
