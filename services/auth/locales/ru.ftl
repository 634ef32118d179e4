# What auth writes to people, in Russian. Every message here has its twin in en.ftl (a test
# checks).

# The first line of every email; the name only once the address is confirmed.
greeting = Здравствуйте!
greeting-named = Здравствуйте, { $name }!

verify-email =
    .subject = Подтвердите email для SkillUp
    .body =
        { $greeting }

        Подтвердите адрес электронной почты — откройте ссылку:
        { $link }

        Или отправьте этот токен в POST /api/auth/verify-email: { $token }

        Ссылка действует { $hours ->
            [one] { $hours } час
            [few] { $hours } часа
           *[many] { $hours } часов
        }.

reset-password =
    .subject = Сброс пароля SkillUp
    .body =
        { $greeting }

        Кто-то попросил сбросить пароль вашего аккаунта. Если это были вы, откройте ссылку:
        { $link }

        Или отправьте этот токен в POST /api/auth/password/reset/confirm: { $token }

        Ссылка действует { $minutes ->
            [one] { $minutes } минуту
            [few] { $minutes } минуты
           *[many] { $minutes } минут
        }. Если это были не вы, просто проигнорируйте письмо.

account-taken =
    .subject = Ваш аккаунт SkillUp
    .body =
        { $greeting }

        Кто-то пытался создать аккаунт SkillUp с этим адресом, но аккаунт с ним уже есть. Если это были вы, войдите на { $home } — или, если забыли пароль, восстановите его на { $reset }.

        Если это были не вы, ничего не изменилось; письмо можно проигнорировать.

confirm-email =
    .subject = Подтвердите новый email для SkillUp
    .body =
        { $greeting }

        Подтвердите, что это новый адрес вашего аккаунта SkillUp, — откройте ссылку:
        { $link }

        Или отправьте этот токен в POST /api/auth/me/email/confirm: { $token }

        Ссылка действует { $hours ->
            [one] { $hours } час
            [few] { $hours } часа
           *[many] { $hours } часов
        }. До тех пор у аккаунта остаётся прежний адрес.

email-changing =
    .subject = Адрес вашего аккаунта SkillUp скоро изменится
    .body =
        { $greeting }

        Кто-то, войдя в ваш аккаунт SkillUp, попросил сменить его адрес на { $new }. Адрес изменится, только когда откроют ссылку, отправленную туда.

        Если это были не вы, немедленно смените пароль на { $reset } — это завершит все чужие сеансы.

email-taken =
    .subject = Ваш аккаунт SkillUp
    .body =
        { $greeting }

        Кто-то попросил перенести другой аккаунт SkillUp на этот адрес, но у адреса уже есть аккаунт — ваш. Ничего не изменилось. Если вы забыли пароль, восстановите его на { $reset }; войти можно на { $home }.

data-export-ready =
    .subject = Ваши данные SkillUp готовы к скачиванию
    .body =
        { $greeting }

        копия ваших данных SkillUp, которую вы запросили, готова: аккаунт, сеансы, библиотека, расход, подписка, платежи и уведомления — zip-архив с файлами JSON и Markdown ({ $size }).

        Скачайте её, войдя в свой аккаунт:
        { $link }

        Ссылка действует { $hours ->
            [one] { $hours } час
            [few] { $hours } часа
           *[many] { $hours } часов
        }, потом копия удаляется. Если вы её не запрашивали, смените пароль: { $reset }.

# Ошибки, которые читают люди.
error-invalid-credentials = Неверный email или пароль.
error-throttled = Слишком много попыток; попробуйте снова через { $seconds ->
    [one] { $seconds } секунду
    [few] { $seconds } секунды
   *[many] { $seconds } секунд
}.
error-sign-in = Сначала войдите в аккаунт.
error-token-expired = Сеанс истёк; войдите снова.
error-token-revoked = Этот сеанс завершён; войдите снова.
error-deactivated = Этот аккаунт отключён.
error-unavailable = Вход сейчас недоступен; попробуйте чуть позже.
error-refresh-invalid = Токен обновления недействителен; войдите снова.
error-token-invalid = Токен доступа недействителен; войдите снова.
error-no-session = Такого сеанса нет.
error-scope = Для этого действия у вашего входа нет прав.
error-last-admin = Кто-то должен остаться администратором: сначала выдайте права администратора другой активной учётной записи.
error-no-account = Такого аккаунта нет.
error-address-taken = Этот адрес уже занят другим аккаунтом.
error-export-gone = Такой копии ваших данных нет: срок её хранения истёк или её не создавали. Запросите новую.
error-export-not-ready = Копия ваших данных ещё готовится; когда она будет готова, придёт письмо.
error-api-key-invalid = Этот API-ключ недействителен: его отозвали, срок его действия истёк или такого ключа нет.
error-api-keys-full = У вас уже столько API-ключей, сколько можно одному аккаунту; сначала удалите ненужный.
error-no-api-key = Такого API-ключа нет.
error-signed-in-only = API-ключом этого сделать нельзя; войдите в аккаунт.

# Отклонённый ввод (`$n` — число, которое называет правило).
email-required = Укажите email.
email-too-long = Email длиннее 254 символов.
email-local-length = Часть до @ должна быть длиной от 1 до 64 символов.
email-no-at = В email должен быть знак @.
email-one-at = В email должен быть ровно один знак @.
email-local-chars = В части до @ есть символы, недопустимые в адресе.
email-domain = Домен после @ указан неверно.
name-too-long = Имя должно быть не длиннее 100 символов.
name-control = В имени не может быть управляющих символов.
locale-unknown = Язык должен быть «en» или «ru».
time-zone-unknown = Часовой пояс должен быть названием из базы IANA, например «Europe/Moscow».
password-too-short = Пароль должен быть не короче { $n ->
    [one] { $n } символа
   *[other] { $n } символов
}.
password-too-long = Пароль должен быть не длиннее { $n ->
    [one] { $n } байта
   *[other] { $n } байт
} (bcrypt дальше не читает).
password-spaces = Пароль не может состоять из одних пробелов.
password-control = В пароле не может быть управляющих символов.
password-wrong = Неверный пароль.
password-same = Новый пароль должен отличаться от текущего.
address-same = Это и так адрес вашего аккаунта.
link-invalid = Эта ссылка недействительна; запросите новую.
link-used = Эта ссылка уже использована.
link-expired = Срок действия ссылки истёк; запросите новую.
key-name-required = Укажите название ключа.
key-name-too-long = Название ключа должно быть не длиннее 100 символов.
key-name-control = Название ключа должно быть одной строкой без управляющих символов.
key-expiry-past = Срок действия ключа должен быть в будущем.
key-expiry-far = Срок действия ключа — не больше трёх лет.
