// Generated text is Markdown from a model: rendered with raw HTML switched off (tags come out
// as text) and markdown-it's link check (no `javascript:`, `vbscript:`, `file:` or non-image
// `data:` URLs), links opened away from the console. Nothing the model writes can run here.
import MarkdownIt from 'markdown-it'

const md = new MarkdownIt({ html: false, linkify: false, typographer: false, breaks: false })
const defaultLink = md.renderer.rules.link_open ?? ((tokens, idx, options, _env, self) => self.renderToken(tokens, idx, options))
md.renderer.rules.link_open = (tokens, idx, options, env, self) => {
  const token = tokens[idx]!
  token.attrSet('rel', 'noopener noreferrer nofollow')
  token.attrSet('target', '_blank')
  return defaultLink(tokens, idx, options, env, self)
}

export function renderMarkdown(text: string): string {
  return md.render(text)
}
