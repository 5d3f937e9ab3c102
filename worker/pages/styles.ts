// The one stylesheet, served from /assets/app.css (the CSP allows no inline styles).
export const STYLESHEET = `
:root { --ink: #17202a; --muted: #4a5560; --line: #d5dbe1; --accent: #0b5cad; --accent-ink: #fff;
  --ok: #1e6b34; --warn: #8a4b00; --danger: #a61b1b; --bg: #f7f9fb; font-family: system-ui, sans-serif; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: var(--bg); line-height: 1.5; }
header.site, footer.site { display: flex; justify-content: space-between; align-items: center; gap: 1rem;
  padding: 0.75rem 1.25rem; background: #fff; border-bottom: 1px solid var(--line); }
footer.site { border-top: 1px solid var(--line); border-bottom: 0; color: var(--muted); margin-top: 3rem; }
header.site nav { display: flex; align-items: center; gap: 1rem; }
.brand { font-weight: 700; font-size: 1.25rem; color: var(--ink); text-decoration: none; }
main { max-width: 44rem; margin: 0 auto; padding: 1.5rem 1.25rem; }
a { color: var(--accent); }
:focus-visible { outline: 3px solid #f0b400; outline-offset: 2px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 1.25rem; margin: 1rem 0; }
.field { margin-bottom: 1rem; }
label { display: block; font-weight: 600; margin-bottom: 0.25rem; }
input, textarea { width: 100%; padding: 0.6rem; font-size: 1rem; border: 1px solid #8a96a3; border-radius: 6px; }
button, a.button { display: inline-block; padding: 0.6rem 1.1rem; font-size: 1rem; border-radius: 6px; border: 0;
  background: var(--accent); color: var(--accent-ink); cursor: pointer; text-decoration: none; }
button.danger { background: var(--danger); }
button.link { background: none; color: var(--accent); padding: 0; text-decoration: underline; }
form.inline { display: inline; }
.hint { color: var(--muted); font-size: 0.9rem; margin: 0.25rem 0; }
.alert { padding: 0.75rem 1rem; border-radius: 6px; border: 1px solid; }
.alert.error { color: var(--danger); border-color: var(--danger); background: #fdf1f1; }
.alert.notice { color: var(--ok); border-color: var(--ok); background: #eff8f1; }
.alert.warn { color: var(--warn); border-color: var(--warn); background: #fdf6ec; } .alert p { margin: 0.25rem 0; }
.badge { font-size: 0.8rem; padding: 0.1rem 0.5rem; border-radius: 999px; border: 1px solid; }
.badge.ok { color: var(--ok); } .badge.warn { color: var(--warn); }
.hero h1 { font-size: 2rem; line-height: 1.2; }
pre { white-space: pre-wrap; word-break: break-word; background: var(--bg); padding: 0.75rem; border-radius: 6px; }
.mail h2 { font-size: 1.1rem; margin: 0; }
.plans { list-style: none; padding: 0; display: grid; gap: 1rem; grid-template-columns: repeat(auto-fit, minmax(14rem, 1fr)); }
.plan { border: 1px solid var(--line); border-radius: 8px; padding: 1rem; }
.plan h3 { margin: 0; } .price { font-size: 1.3rem; font-weight: 700; margin: 0.25rem 0; }
button:disabled { background: #8a96a3; cursor: not-allowed; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.25rem 1rem; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
table { width: 100%; border-collapse: collapse; } th, td { text-align: left; padding: 0.4rem; border-bottom: 1px solid var(--line); }
.badge.bad { color: var(--danger); }
.problem { color: var(--danger); margin: 0.25rem 0; }
.problem:empty { display: none; }
.warning { border-left: 4px solid var(--danger); padding-left: 0.75rem; }
fieldset { border: 0; padding: 0; } legend { font-weight: 600; margin-bottom: 0.25rem; }
label.choice { font-weight: 400; display: flex; align-items: center; gap: 0.5rem; }
label.choice input { width: auto; }
select { width: 100%; padding: 0.6rem; font-size: 1rem; border: 1px solid #8a96a3; border-radius: 6px; background: #fff; }
code, h1, h2 { overflow-wrap: anywhere; }
.servers, .users, .legal-exports, .hosts, ul.plain { list-style: none; padding: 0; } ul.plain { margin: 0; }
.servers h2, .users h3, .legal-exports h2, .legal-exports h3, .hosts h3 { margin: 0; font-size: 1.1rem; }
.operator-nav { margin-bottom: 1rem; } table.facts td { overflow-wrap: anywhere; } caption { text-align: left; font-weight: 600; }
.tabs { display: flex; gap: 1rem; flex-wrap: wrap; } .tabs [aria-current] { font-weight: 700; color: var(--ink); }
.chart { margin: 1rem 0; } .chart svg { width: 100%; height: auto; display: block; }
.chart text { font-size: 12px; fill: var(--muted); }
.chart .grid { stroke: var(--line); } .chart .limit line { stroke: var(--danger); stroke-dasharray: 2 2; }
.chart .limit text { fill: var(--danger); }
.chart polyline { fill: none; stroke: var(--accent); stroke-width: 2; } .chart .s1 polyline { stroke: var(--ink); }
.chart .s2 polyline { stroke: var(--warn); } .chart .series text { fill: var(--ink); }
.chart circle { fill: var(--accent); } .chart .s1 circle { fill: var(--ink); } .chart .s2 circle { fill: var(--warn); }
.scroll { overflow-x: auto; }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
form + form, .restore { margin-top: 1rem; }
ul.statements { list-style: none; padding: 0; } .statement { margin: 1rem 0; } .statement p { margin: 0.25rem 0; }
@media (max-width: 30rem) { header.site { flex-wrap: wrap; } header.site nav { gap: 0.75rem; flex-wrap: wrap; } }
`;
