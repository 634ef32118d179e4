import { describe, expect, it } from 'vitest'
import { plainText, renderMarkdown } from '~/utils/markdown'

describe('generated Markdown', () => {
  it('renders formatting', () => {
    expect(renderMarkdown('# Title\n\n**bold**')).toContain('<h1>Title</h1>')
  })

  it('never lets raw HTML or script URLs through', () => {
    const html = renderMarkdown('<script>alert(1)</script>\n\n<img src=x onerror=alert(1)>\n\n[x](javascript:alert(1))')
    expect(html).not.toContain('<script')
    expect(html).not.toContain('<img')
    expect(html).not.toContain('href="javascript:')
    expect(html).toContain('&lt;script&gt;')
  })

  it('opens links away from the console', () => {
    expect(renderMarkdown('[a](https://example.com)')).toContain('rel="noopener noreferrer nofollow" target="_blank"')
  })
})

describe('excerpts as prose', () => {
  it('drops the marks and keeps the words', () => {
    expect(plainText('# Summary: Tides\n- **What** they are\n- _why_ and `how`\n1. [Read](https://x)')).toBe('Summary: Tides What they are why and how Read')
  })

  it('keeps an underscore inside a word', () => {
    expect(plainText('set OPENAI_API_KEY or __ANTHROPIC_API_KEY__')).toBe('set OPENAI_API_KEY or ANTHROPIC_API_KEY')
  })
})
