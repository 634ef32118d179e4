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
