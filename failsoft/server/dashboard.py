"""A one-page dashboard: every model, its chain, breaker states and where answers came from."""

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>failsoft</title>
<style>
body{font:14px system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:0 0 2em}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}
.closed{color:#080}.open{color:#b00;font-weight:bold}.half_open{color:#b60}.live{color:#080}
.quarantined{color:#b00}h2{margin-bottom:.3em}small{color:#777}
</style></head><body>
<h1>failsoft</h1><small>refreshes every 2 s &middot; <a href="/metrics">/metrics</a> &middot;
<a href="/v1/models">/v1/models</a></small><div id="m"></div>
<script>
function esc(s){return String(s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]))}
async function tick(){
  const r=await fetch('/v1/models');const d=await r.json();let h='';
  for(const m of d.models){
    h+=`<h2>${esc(m.name)} <small>v${esc(m.version)} &middot; deadline ${m.deadline_ms} ms &middot;
        <span class="${esc(m.health)}">${esc(m.health)}</span></small></h2>
        <table><tr><th>tier</th><th>kind</th><th>breaker</th><th>in flight</th><th>answered</th><th>skipped</th></tr>`;
    for(const t of m.chain){
      const b=t.breaker?t.breaker.state:'-';
      const sk=t.skipped?Object.entries(t.skipped).map(([k,v])=>`${esc(k)}: ${v}`).join(', '):'';
      h+=`<tr><td>${esc(t.name)}</td><td>${esc(t.kind)}</td><td class="${esc(b)}">${esc(b)}</td>
          <td>${t.in_flight??'-'}</td><td>${t.answered}</td><td>${sk}</td></tr>`;
    }
    h+='</table>';
  }
  document.getElementById('m').innerHTML=h;
}
tick();setInterval(tick,2000);
</script></body></html>
"""
