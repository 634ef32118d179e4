# Что говорят уведомления и письма о них, по-русски. У каждого сообщения здесь есть пара в
# en.ftl (это проверяет тест).

generation-completed = Текст «{ $topic }» готов
generation-failed = Не удалось написать текст «{ $topic }»
payment-succeeded = { $what ->
    [refund] { $amount } возвращено на карту
    [credit] { $amount } начислено: тариф не выдержал обещанный уровень сервиса
   *[payment] Платёж на { $amount } прошёл
}
    .credit = Ваш тариф не выдержал обещанный уровень сервиса за месяц; компенсация уже на балансе.
payment-failed = { $what ->
    [refund] Возврат { $amount } на карту не прошёл; деньги снова на балансе
   *[payment] Платёж на { $amount } отклонён
}
subscription-changed = Ваш тариф теперь — { $plan }
    .body = Действует тариф { $plan }.
    .until = Тариф { $plan } действует до { $until }.

digest =
    .subject = { $count ->
        [one] Готова { $count } генерация
        [few] Готовы { $count } генерации
       *[many] Готовы { $count } генераций
    }
    .mixed = { $count ->
        [one] { $count } новость от SkillUp
        [few] { $count } новости от SkillUp
       *[many] { $count } новостей от SkillUp
    }
    .hello = Здравствуйте!
    .receipt = Чек: операция { $id }, { $date } (UTC)
    .read = Прочитать их в SkillUp: { $link }
    .off = Отписаться от этих писем: { $link } (или выбрать, какие письма и когда приходят, в настройках уведомлений).
