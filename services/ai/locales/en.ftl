# What the ai service tells people, in English. Every message here has its twin in ru.ftl (a
# test checks).

email-not-verified = Confirm your email address first: generation needs a verified account.
not-found = No such document.
unavailable = Generation is unavailable right now; try again in a moment.
unknown-model = The model “{ $model }” does not exist; GET /v1/models lists the models you can use.

# A document that cannot do what was asked in its state (`$status`: queued, running,
# completed, failed, cancelled).
no-text-yet = the document has no text to export: it is { $status }
already = the task is already { $status }
