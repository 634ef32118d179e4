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
error-export-gone = Такой копии ваших данных нет: срок её хранения истёк или её не создавали. Запросите новую.
error-export-not-ready = Копия ваших данных ещё готовится; когда она будет готова, придёт письмо.
