import type { HtmlLinkDescriptor } from '@remix-run/react';

// KaTeX's stylesheet and fonts from node_modules/katex, copied by `npm run build` into
// public/build/katex (upstream links them from cdn.jsdelivr.net; this site works offline).
export const KatexCSS: HtmlLinkDescriptor = {
  rel: 'stylesheet',
  href: '/myst_assets_folder/katex/katex.min.css',
};
