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
