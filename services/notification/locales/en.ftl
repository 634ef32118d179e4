# What notifications and their emails say, in English. Every message here has its twin in
# ru.ftl (a test checks).

generation-completed = Your { $function } about «{ $topic }» is ready
generation-failed = Your { $function } about «{ $topic }» could not be written
payment-succeeded = { $what ->
    [refund] { $amount } went back to your card
    [credit] { $amount } credited: your plan missed its service level
   *[payment] Payment of { $amount } went through
}
    .credit = Your plan did not keep the service level it promises for a month; this credit is on your balance.
payment-failed = { $what ->
    [refund] The refund of { $amount } to your card failed; the money is back on your balance
   *[payment] Payment of { $amount } was refused
}
subscription-changed = Your plan is now { $plan }
    .body = The { $plan } plan is in force.
    .until = The { $plan } plan is in force until { $until }.

digest =
    .subject = { $count ->
        [one] { $count } of your generations has finished
       *[other] { $count } of your generations have finished
    }
    .mixed = { $count } updates from SkillUp
    .hello = Hello,
    .receipt = Receipt: transaction { $id }, { $date } (UTC)
    .read = Read them in SkillUp: { $link }
    .off = Stop these emails: { $link } (or choose which ones come, and when, in your notification preferences).
