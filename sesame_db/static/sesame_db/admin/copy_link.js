"use strict";
// Copy the link on the page that issued it. This isn't an inline script, so
// that a Content-Security-Policy without 'unsafe-inline' allows it.
document.addEventListener("DOMContentLoaded", function () {
    const input = document.getElementById("issued-link");
    const button = document.getElementById("copy-issued-link");
    const status = document.getElementById("copy-issued-link-status");
    if (!input || !button || !status) {
        return;
    }
    button.addEventListener("click", function () {
        input.select();
        // navigator.clipboard exists only in secure contexts: HTTPS or localhost.
        if (!navigator.clipboard) {
            status.textContent = button.dataset.failed;
            return;
        }
        navigator.clipboard.writeText(input.value).then(
            function () { status.textContent = button.dataset.copied; },
            function () { status.textContent = button.dataset.failed; }
        );
    });
});
