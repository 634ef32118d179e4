# What the ai service tells people, in English. Every message here has its twin in ru.ftl (a
# test checks).

email-not-verified = Confirm your email address first: generation needs a verified account.
not-found = No such document.
unavailable = Generation is unavailable right now; try again in a moment.
