// vue-i18n's options: Russian plurals by CLDR (1 генерация, 2 генерации, 5 генераций, 21
// генерация) — messages list the forms as "one | few | many".
import en from './locales/en.json'
import ru from './locales/ru.json'

const ruForms: Record<string, number> = { one: 0, few: 1, many: 2, other: 2 }
const ruPlural = new Intl.PluralRules('ru')
const enPlural = new Intl.PluralRules('en')

export default defineI18nConfig(() => ({
  legacy: false,
  fallbackLocale: 'en',
  messages: { en, ru },
  pluralRules: {
    ru: (choice: number, choicesLength: number) => Math.min(ruForms[ruPlural.select(choice)] ?? 2, choicesLength - 1),
    en: (choice: number, choicesLength: number) => Math.min(enPlural.select(choice) === 'one' ? 0 : 1, choicesLength - 1),
  },
}))
