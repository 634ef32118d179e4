# What auth writes to people, in English. Every message here has its twin in ru.ftl (a test
# checks).

# The first line of every email; the name only once the address is confirmed.
greeting = Hello,
greeting-named = Hello { $name },

verify-email =
    .subject = Confirm your email for SkillUp
    .body =
        { $greeting }

        confirm your email address by opening this link:
        { $link }

        Or send this token to POST /api/auth/verify-email: { $token }

        The link expires in { $hours ->
            [one] { $hours } hour
           *[other] { $hours } hours
        }.

reset-password =
    .subject = Reset your SkillUp password
    .body =
        { $greeting }

        someone asked to reset your password. If it was you, open:
        { $link }

        Or send this token to POST /api/auth/password/reset/confirm: { $token }

        The link expires in { $minutes ->
            [one] { $minutes } minute
           *[other] { $minutes } minutes
        }. If it was not you, ignore this email.

account-taken =
    .subject = Your SkillUp account
    .body =
        { $greeting }

        someone tried to create a SkillUp account with this address, which already has one. If it was you, sign in at { $home } — or, if you forgot your password, reset it at { $reset }.

        If it was not you, nothing changed; you can ignore this email.

confirm-email =
    .subject = Confirm your new email for SkillUp
    .body =
        { $greeting }

        confirm that this is the new address of your SkillUp account by opening this link:
        { $link }

        Or send this token to POST /api/auth/me/email/confirm: { $token }

        The link expires in { $hours ->
            [one] { $hours } hour
           *[other] { $hours } hours
        }. Until then the account keeps its current address.

email-changing =
    .subject = Your SkillUp address is about to change
    .body =
        { $greeting }

        someone signed in to your SkillUp account asked to change its address to { $new }. It changes only when the link sent there is opened.

        If it was not you, change your password now at { $reset } — that signs everyone else out.

email-taken =
    .subject = Your SkillUp account
    .body =
        { $greeting }

        someone asked to move another SkillUp account to this address, which already has an account — yours. Nothing changed. If you forgot your password, reset it at { $reset }; to sign in, go to { $home }.

data-export-ready =
    .subject = Your SkillUp data is ready to download
    .body =
        { $greeting }

        the copy of your SkillUp data you asked for is ready: your account, sessions, library, usage, subscription, transactions and notifications, as a zip of JSON and Markdown files ({ $size }).

        Download it while signed in to your account:
        { $link }

        The link works for { $hours ->
            [one] { $hours } hour
           *[other] { $hours } hours
        }, then the copy is deleted. If you did not ask for it, change your password at { $reset }.

# Errors people read.
error-invalid-credentials = Email or password is wrong.
error-throttled = Too many attempts; try again in { $seconds ->
    [one] { $seconds } second
   *[other] { $seconds } seconds
}.
error-sign-in = Sign in first.
error-token-expired = Your session has expired; sign in again.
error-token-revoked = This session has ended; sign in again.
error-deactivated = This account is deactivated.
error-unavailable = Sign-in is unavailable right now; try again in a moment.
error-refresh-invalid = The refresh token is not valid; sign in again.
error-token-invalid = The access token is not valid; sign in again.
error-no-session = No such session.
error-scope = This action needs a permission your sign-in does not have.
error-last-admin = Somebody must stay an administrator: grant the admin scope to another active account first.
error-no-account = No such account.
error-address-taken = This address has an account now.
error-export-gone = There is no such copy of your data: it has expired or was never made. Ask for a new one.
error-export-not-ready = The copy of your data is still being prepared; you will get an email when it is ready.
error-api-key-invalid = This API key is not valid: it was revoked, has expired or never existed.
error-api-keys-full = You hold as many API keys as an account may; delete one you no longer use first.
error-no-api-key = No such API key.
error-signed-in-only = An API key cannot do this; sign in to manage the account.

# Refused input (`$n`: the number a rule names).
email-required = email is required
email-too-long = email is longer than 254 characters
email-local-length = the part before @ must be 1 to 64 characters
email-no-at = email must contain @
email-one-at = email must contain exactly one @
email-local-chars = the part before @ has characters an address cannot have
email-domain = the domain after @ is not valid
name-too-long = name must be at most 100 characters
name-control = name cannot contain control characters
locale-unknown = locale must be "en" or "ru"
time-zone-unknown = time_zone must be an IANA time zone name such as "Europe/Moscow"
password-too-short = password must be at least { $n } characters
password-too-long = password must be at most { $n } bytes (bcrypt reads no further)
password-spaces = password cannot be only spaces
password-control = password cannot contain control characters
password-wrong = the password is wrong
password-same = the new password must differ from the current one
address-same = this is the account's address already
link-invalid = this link is not valid; ask for a new one
link-used = this link was already used
link-expired = this link has expired; ask for a new one
key-name-required = name is required
key-name-too-long = name must be at most 100 characters
key-name-control = name must be one line without control characters
key-expiry-past = expires_at must be in the future
key-expiry-far = expires_at must be at most 3 years ahead
