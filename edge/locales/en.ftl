# The pages the edge serves for the links in our emails, until the web console serves them.
# Every message here has its twin in ru.ftl (a test checks).

home = Open SkillUp

verify =
    .title = Confirm your email
    .lead = Press the button to confirm this address for your SkillUp account.
    .button = Confirm my email
    .done = Your email is confirmed. You can close this page and go back to SkillUp.

reset =
    .title = Set a new password
    .lead = Choose a new password for your SkillUp account. Every device signed in to it will be signed out.
    .password = New password
    .repeat = The same password again
    .button = Set the password
    .done = Your password is set. Sign in with it on every device.
    .mismatch = The two passwords differ. Type the same one twice.

confirm =
    .title = Confirm your new address
    .lead = Press the button to make this the address of your SkillUp account.
    .button = Use this address
    .done = Your SkillUp account's address is now { $email }.

link-invalid = This link is not valid, was used already, or has expired. Ask SkillUp for a new one.
too-many = Too many attempts. Wait a minute and try again.
address-taken = This address has an account now, so the change was not made.
try-later = Something went wrong on our side. Try again in a few minutes.

# The edge's own errors, by code (a service's errors come worded by the service).
error-UNAUTHENTICATED = Sign in first: the request has no valid access token.
error-PERMISSION_DENIED = This action is not allowed for this account.
error-NOT_FOUND = There is nothing at this address.
error-METHOD_NOT_ALLOWED = This address does not take this method.
error-RATE_LIMITED = Too many requests; try again in { $seconds ->
    [one] { $seconds } second
   *[other] { $seconds } seconds
}.
error-PAYLOAD_TOO_LARGE = The request is too large.
error-UNSUPPORTED_MEDIA_TYPE = Send the body as JSON.
error-DEADLINE_EXCEEDED = The service did not answer in time; try again.
error-UNAVAILABLE = The service is unavailable right now; try again in a moment.
error-INTERNAL = Something went wrong on our side; try again later.

# The edge's own answers to bad input (`$field`: the field's name in the API; `$detail`: what
# the parser said, in English).
bad-query-in-body = query parameter `{ $field }` belongs to the body
bad-schema = the request does not fit its schema: { $detail }
bad-json = the body is not valid JSON (line { $line }, column { $column }): unexpected input
bad-json-eof = the body is not valid JSON (line { $line }, column { $column }): it ends too early
bad-object = the body must be a JSON object
bad-unknown-query = unknown query parameter `{ $field }`
bad-unknown-path = unknown path variable `{ $field }`
bad-not-message = `{ $field }`: { $part } is not a message
bad-unsettable-query = `{ $field }` cannot be set from the query parameter
bad-unsettable-path = `{ $field }` cannot be set from the path variable
bad-twice = `{ $field }` is set twice
bad-value-query = query parameter `{ $field }`: { $detail }
bad-value-path = path variable `{ $field }`: { $detail }
bad-required = `{ $field }` is required
bad-enum = `{ $field }` must be one of { $options }
bad-two-credentials = send one credential: either Authorization or the bearer.<token> subprotocol
bad-body-unread = the body could not be read
