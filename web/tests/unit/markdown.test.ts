import { describe, expect, it } from 'vitest'
import { renderMarkdown } from '~/utils/markdown'

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
