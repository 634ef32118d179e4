# What the prompt service tells people, in English. Every message here has its twin in ru.ftl
# (a test checks).

no-function = no function `{ $function }`
no-template = function `{ $function }` has no published template
