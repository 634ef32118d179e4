// Lighthouse (desktop) on the console as a person meets it: the sign-in page signed out, then —
// signed in through that page, in the same browser — every other page given. Run by
// scripts/bench-console from a directory holding lighthouse@13.5 (its puppeteer-core drives
// Debian's Chromium). Prints "path final-path performance accessibility" per page.
import puppeteer from 'puppeteer-core'
import { startFlow, desktopConfig } from 'lighthouse'

const [url, email, password, ...pages] = process.argv.slice(2)
const browser = await puppeteer.launch({
  executablePath: process.env.CHROME_PATH ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--headless=new'],
})
const page = await browser.newPage()
const flags = { disableStorageReset: true, onlyCategories: ['performance', 'accessibility'] }
const flow = await startFlow(page, { config: desktopConfig, flags })
await flow.navigate(`${url}/signin`)
await page.type('input[name=email]', email)
await page.type('input[name=password]', password)
await Promise.all([page.waitForNavigation({ waitUntil: 'networkidle0' }).catch(() => {}), page.click('button[type=submit]')])
for (const p of pages) await flow.navigate(`${url}${p}`)
for (const step of (await flow.createFlowResult()).steps) {
  const r = step.lhr
  const path = (u) => new URL(u).pathname
  console.log(path(r.requestedUrl), path(r.finalDisplayedUrl), Math.round(r.categories.performance.score * 100), Math.round(r.categories.accessibility.score * 100))
}
await browser.close()
