// A destructive button stays disabled until its confirmation field repeats the value
// it names. The server checks the confirmation again; this only saves a wasted trip.
"use strict";
document.querySelectorAll("button[data-confirmed-by]").forEach((button) => {
  const field = document.getElementById(button.dataset.confirmedBy);
  if (!field) return;
  const update = () => { button.disabled = field.value.trim() !== field.dataset.mustEqual; };
  field.addEventListener("input", update);
  update();
});
