// vue-i18n's options: Russian plurals by CLDR (1 генерация, 2 генерации, 5 генераций, 21
// генерация) — messages list the forms as "one | few | many".
const ruForms: Record<string, number> = { one: 0, few: 1, many: 2, other: 2 }
const ru = new Intl.PluralRules('ru')
const en = new Intl.PluralRules('en')

export default defineI18nConfig(() => ({
  legacy: false,
  fallbackLocale: 'en',
  pluralRules: {
    ru: (choice: number, choicesLength: number) => Math.min(ruForms[ru.select(choice)] ?? 2, choicesLength - 1),
    en: (choice: number, choicesLength: number) => Math.min(en.select(choice) === 'one' ? 0 : 1, choicesLength - 1),
  },
}))
