#!/bin/sh
# Run by `npm run build` (prebuild) on the installed node_modules, so the site builds and reads offline.
set -eu

# esbuild cannot bundle these two CSS @imports of @jupyter-widgets/controls (upstream patches them out too).
sed -i -E "s#^@import '\./(lumino|nouislider)\.css';#/* & */#" \
  node_modules/@jupyter-widgets/controls/css/widgets-base.css

# thebe-core renders notebook outputs with a LaTeX typesetter that loads MathJax 2.7.5 from cdnjs
# whenever an HTML output is shown. No output of the study holds LaTeX (the notebooks' markdown
# math is rendered by KaTeX at build time), so the default URL is emptied: thebe-core then creates
# no typesetter and the pages request nothing off the machine.
mathjax='https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.5/MathJax.js'
for file in node_modules/thebe-core/dist/lib/thebe-core.min.js node_modules/thebe-core/dist/esm/options.js \
            node_modules/thebe-core/dist/esm/config.js node_modules/thebe-core/dist/cjs/options.js \
            node_modules/thebe-core/dist/cjs/config.js; do
  sed -i "s#$mathjax##g" "$file"
done
if grep -rl --include='*.js' 'cdnjs.cloudflare.com/ajax/libs/mathjax' node_modules/thebe-core/dist; then
  echo "prebuild: thebe-core still names MathJax on cdnjs (a new thebe-core version?): update scripts/prebuild.sh" >&2
  exit 1
fi
