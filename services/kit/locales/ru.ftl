# Что каждый сервис говорит об отклонённом поле, по-русски. У каждого сообщения есть пара в
# en.ftl (это проверяет тест). `$field` — имя поля в API.

field-required = Заполните поле «{ $field }».
field-uuid = Поле «{ $field }» должно быть UUID.
field-chars = Поле «{ $field }»: от { $min } до { $max ->
    [one] { $max } символа
   *[other] { $max } символов
}.
field-at-most-chars = Поле «{ $field }»: не длиннее { $max ->
    [one] { $max } символа
   *[other] { $max } символов
}.
field-at-most-items = Поле «{ $field }»: не больше { $max } значений.
field-at-most = Поле «{ $field }»: не больше { $max }.
field-one-of = Поле «{ $field }» должно быть одним из: { $options }.
field-time-zone = Поле «{ $field }» должно быть часовым поясом IANA, например «Europe/Moscow».
field-slug = Поле «{ $field }» должно быть кодом из 1–64 символов a-z, 0-9, _ и -, например «quiz».
field-page-token = Поле «{ $field }»: такую метку страницы этот API не выдавал.
field-between = Поле «{ $field }»: от { $min } до { $max }.
field-one-line = Поле «{ $field }»: одна строка не длиннее { $max ->
    [one] { $max } символа
   *[other] { $max } символов
}.
field-control = В поле «{ $field }» есть управляющие символы.
field-currency = Поле «{ $field }» должно быть кодом валюты ISO 4217, например USD или RUB.
field-language = Поле «{ $field }» должно быть языковым тегом BCP 47, например «en» или «ru».
field-idempotency-key = Отправьте Idempotency-Key из 1–128 печатных символов ASCII.
field-not-yours = Поле «{ $field }»: такого значения у вас нет.
field-currency-only = Поле «{ $field }» должно быть { $currency }: оплата здесь принимается только в { $currency }.
field-return-url = Поле «{ $field }» должно быть путём этого сайта (например, /billing) или адресом на нём.
field-email = Поле «{ $field }» должно быть адресом электронной почты.
field-push-endpoint = Поле «{ $field }» должно быть https-адресом службы push-уведомлений в интернете.
field-push-key = Поле «{ $field }» не похоже на push-ключ браузера (base64url).
field-not-found = Такого не найдено: { $what }.

# Администрирование (вызовы администратора в любом сервисе).
admin-required = Этот вызов доступен только администраторам: войдите под учётной записью с правами администратора (операторам — передайте утверждение из `skillup admin assertion`).
