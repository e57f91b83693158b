/* facetrace pages: a few lines of plain JavaScript, no build step.
   1. Forms marked data-busy disable their button while the upload and search run.
   2. Ingest jobs on /galleries (rows with data-job-url and data-active="1") poll
      GET /api/v1/jobs/{id} every second and update their status, progress and message,
      until the job is done or failed (or five requests in a row fail). */
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("form[data-busy]").forEach(function (form) {
    form.addEventListener("submit", function () {
      var button = form.querySelector("button[type=submit]");
      if (button) {
        button.disabled = true;
        button.textContent = form.getAttribute("data-busy");
      }
    });
  });

  document.querySelectorAll("tr[data-job-url][data-active='1']").forEach(watchJob);
});

function watchJob(row) {
  var url = row.getAttribute("data-job-url");
  var failures = 0;
  var timer = setInterval(function () {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (job) {
        failures = 0;
        showJob(row, job);
        if (job.status !== "queued" && job.status !== "running") {
          clearInterval(timer);
          row.setAttribute("data-active", "0");
          var note = document.getElementById("jobs-finished");
          if (note) { note.hidden = false; }
        }
      })
      .catch(function () {
        failures += 1;
        if (failures >= 5) { clearInterval(timer); }
      });
  }, 1000);
}

function showJob(row, job) {
  var percent = job.percent == null ? 0 : job.percent;
  row.querySelector(".job-status").textContent = job.status;
  row.querySelector(".job-progress").value = percent;
  row.querySelector(".job-percent").textContent = percent + "%";
  row.querySelector(".job-count").textContent = job.total ? job.done + " / " + job.total : "";
  row.querySelector(".job-message").textContent = job.message || "";
}
