# What every service says about a refused field, in English. Every message here has its twin in
# ru.ftl (a test checks). `$field` is the field's name in the API.

field-required = `{ $field }` is required
field-uuid = `{ $field }` must be a UUID
field-chars = `{ $field }` must be { $min }..={ $max } characters
field-at-most-chars = `{ $field }` must be at most { $max ->
    [one] { $max } character
   *[other] { $max } characters
}
field-at-most-items = at most { $max } `{ $field }`
field-at-most = `{ $field }` must be at most { $max }
field-one-of = `{ $field }` must be one of { $options }
field-time-zone = `{ $field }` must be an IANA time zone name such as "Europe/Moscow"
field-slug = `{ $field }` must be a code of 1..=64 characters of a-z, 0-9, _ and - such as "quiz"
field-page-token = `{ $field }` is not one this API gave
field-between = `{ $field }` must be { $min }..={ $max }
field-one-line = `{ $field }` is at most { $max } characters of one line
field-control = `{ $field }` holds control characters
field-currency = `{ $field }` must be an ISO 4217 code such as USD or RUB
field-language = `{ $field }` must be a BCP 47 tag such as "en" or "ru"
field-idempotency-key = send an Idempotency-Key of 1..=128 printable ASCII characters
field-not-yours = `{ $field }` is not one of yours
field-currency-only = `{ $field }` must be { $currency }: payments here are taken only in { $currency }
field-return-url = `{ $field }` must be a path of this site (such as /billing) or an address on it
field-email = `{ $field }` must be an email address
field-push-endpoint = `{ $field }` must be the https address of a push service on the public internet
field-push-key = `{ $field }` is not a browser's push key (base64url)
field-not-found = There is no such { $what }

# Administration (every service's admin calls).
admin-required = This call is for administrators: sign in with an account that has the admin scope (operators: send an assertion from `skillup admin assertion`).
