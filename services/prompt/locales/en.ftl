# What the prompt service tells people, in English. Every message here has its twin in ru.ftl
# (a test checks).

no-function = no function `{ $function }`
no-template = function `{ $function }` has no published template

# Editors' refusals (`$field`: the field; `$what`: the name or position it is about).
template-unclosed = `{ $field }`: `{"{{"}` at byte { $what } is never closed with `{"}}"}`
template-bad-name = `{ $field }`: `{ $what }` is not a variable name (1..=32 of a-z, 0-9, _)
template-undeclared = `{ $field }`: the template uses `{ $what }`, which is not declared
template-needs-topic = `{ $field }` must use {"{{topic}}"}
param-bad-name = `{ $what }` is not a parameter name (1..=32 of a-z, 0-9, _; not topic or max_tokens)
