//! The size report as one self-contained HTML page (no network): the
//! numbers of the JSON report, a bar per layer split into useful and
//! wasted bytes, and a squarified treemap of the final filesystem with
//! each file coloured by the layer that last wrote it.
//!
//! The page's numbers are written into the HTML itself (elements with
//! `id`s and `data-` attributes), so that a test or a scraper reads them
//! without running the script; the script only lays out the treemap.
//! The treemap is bounded: at most [`MAX_CHILDREN`] children per
//! directory and nothing under [`MIN_FRACTION`] of the image, the rest of
//! a directory lumped into one "(N smaller)" cell.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Analysis, FileType};

/// The most children drawn per directory.
pub const MAX_CHILDREN: usize = 100;
/// Cells smaller than this fraction of the whole are lumped together.
pub const MIN_FRACTION: f64 = 1.0 / 2000.0;
/// The deepest directory level drawn.
pub const MAX_DEPTH: usize = 16;

#[derive(Default)]
struct Node {
    size: u64,
    /// Bytes per layer beneath (for a directory's colour).
    layer: usize,
    by_layer: BTreeMap<usize, u64>,
    children: BTreeMap<String, Node>,
}

fn build(analysis: &Analysis) -> Node {
    let mut root = Node::default();
    for p in analysis.final_paths() {
        if p.file_type == FileType::Dir && p.size == 0 {
            continue;
        }
        let mut node = &mut root;
        node.size += p.size;
        *node.by_layer.entry(p.layer).or_default() += p.size;
        for part in p.path.split('/') {
            node = node.children.entry(part.to_owned()).or_default();
            node.size += p.size;
            *node.by_layer.entry(p.layer).or_default() += p.size;
        }
        node.layer = p.layer;
    }
    root
}

/// The layer holding most of a node's bytes.
fn main_layer(n: &Node) -> usize {
    if n.children.is_empty() {
        return n.layer;
    }
    n.by_layer
        .iter()
        .max_by_key(|(l, b)| (**b, std::cmp::Reverse(**l)))
        .map_or(0, |(l, _)| *l)
}

/// `[name, size, layer, [children...]]`, pruned.
fn emit(out: &mut String, name: &str, n: &Node, min: u64, depth: usize) {
    out.push('[');
    json_string(out, name);
    let _ = write!(out, ",{},{},[", n.size, main_layer(n));
    if depth < MAX_DEPTH {
        let mut kids: Vec<(&String, &Node)> = n.children.iter().collect();
        kids.sort_by(|a, b| b.1.size.cmp(&a.1.size).then_with(|| a.0.cmp(b.0)));
        let mut first = true;
        let (mut rest, mut rest_n, mut rest_layer) = (0u64, 0usize, None);
        for (i, (k, c)) in kids.iter().enumerate() {
            if c.size == 0 {
                continue;
            }
            if i >= MAX_CHILDREN || c.size < min {
                rest += c.size;
                rest_n += 1;
                rest_layer.get_or_insert(main_layer(c));
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            emit(out, k, c, min, depth + 1);
        }
        if rest > 0 {
            if !first {
                out.push(',');
            }
            out.push('[');
            json_string(out, &format!("({rest_n} smaller)"));
            let _ = write!(out, ",{rest},{},[]]", rest_layer.unwrap_or(0));
        }
    }
    out.push_str("]]");
}

/// A JSON string, with `<` escaped so that the text cannot close the
/// script element it sits in.
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Text escaped for HTML.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A colour per layer.
fn colour(layer: usize) -> String {
    format!("hsl({}, 65%, 55%)", (layer * 137) % 360)
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// Renders the report.
pub fn render(analysis: &Analysis) -> String {
    let e = &analysis.efficiency;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\
         <title>Image size report: {name}</title><style>{STYLE}</style></head><body>\
         <h1>{name}</h1><p class=\"digest\">{manifest}</p>\
         <table id=\"summary\"><tr><th>total bytes</th><td id=\"total-bytes\">{total}</td></tr>\
         <tr><th>wasted bytes</th><td id=\"wasted-bytes\">{wasted}</td></tr>\
         <tr><th>user bytes (above the first layer)</th><td id=\"user-bytes\">{user}</td></tr>\
         <tr><th>efficiency</th><td id=\"efficiency\">{eff}</td></tr>\
         <tr><th>layers</th><td id=\"layer-count\">{count}</td></tr></table>",
        name = esc(&analysis.image),
        manifest = esc(&analysis.manifest.to_string()),
        total = e.total_bytes,
        wasted = e.wasted_bytes,
        user = e.user_bytes,
        eff = e.efficiency,
        count = analysis.layers.len(),
    );
    let widest = analysis.layers.iter().map(|l| l.bytes).max().unwrap_or(0);
    h.push_str("<h2>Layers</h2><table id=\"layers\"><tr><th>#</th><th>bytes</th><th>useful</th><th>wasted</th><th></th><th>created by</th></tr>");
    for l in &analysis.layers {
        let _ = write!(
            h,
            "<tr class=\"layer\" data-index=\"{i}\" data-digest=\"{d}\" data-bytes=\"{b}\" data-useful=\"{u}\" data-wasted=\"{w}\">\
             <td><span class=\"swatch\" style=\"background:{c}\"></span>{i}</td><td>{b}</td><td>{u}</td><td>{w}</td>\
             <td class=\"barcell\"><div class=\"bar\" style=\"width:{bw:.2}%\"><span class=\"useful\" style=\"width:{up:.2}%;background:{c}\"></span><span class=\"wasted\" style=\"width:{wp:.2}%\"></span></div></td>\
             <td class=\"cmd\">{cmd}</td></tr>",
            i = l.index,
            d = esc(&l.digest.to_string()),
            b = l.bytes,
            u = l.useful_bytes,
            w = l.wasted_bytes,
            c = colour(l.index),
            bw = pct(l.bytes, widest),
            up = pct(l.useful_bytes, l.bytes),
            wp = pct(l.wasted_bytes, l.bytes),
            cmd = esc(l.created_by.as_deref().unwrap_or("")),
        );
    }
    h.push_str("</table><h2>Final filesystem</h2><p>Each cell is a file (or a group of small files), sized by its bytes and coloured by the layer that last wrote it.</p><div id=\"treemap\"></div><div id=\"hover\"></div>");
    h.push_str("<h2>Largest inefficiencies</h2><table id=\"inefficiencies\"><tr><th>path</th><th>copies</th><th>bytes</th></tr>");
    for p in e.inefficiencies.iter().take(50) {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.path),
            p.count,
            p.cumulative_size
        );
    }
    h.push_str("</table>");
    let root = build(analysis);
    let min = (root.size as f64 * MIN_FRACTION) as u64;
    let mut tree = String::new();
    emit(&mut tree, "/", &root, min.max(1), 0);
    let colours: Vec<String> = (0..analysis.layers.len()).map(colour).collect();
    let mut colours_json = String::from("[");
    for (i, c) in colours.iter().enumerate() {
        if i > 0 {
            colours_json.push(',');
        }
        json_string(&mut colours_json, c);
    }
    colours_json.push(']');
    let _ = writeln!(
        h,
        "<script type=\"application/json\" id=\"tree\">{tree}</script>\
         <script>const COLOURS={colours_json};{SCRIPT}</script></body></html>"
    );
    h
}

const STYLE: &str = "body{font:14px sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin-bottom:1em}td,th{padding:2px 8px;text-align:left;border-bottom:1px solid #eee}\
.digest{font-family:monospace;color:#666}.bar{height:14px;background:#eee;display:flex;min-width:2px}\
.bar span{display:block;height:100%}.wasted{background:repeating-linear-gradient(45deg,#c33,#c33 3px,#e88 3px,#e88 6px)}\
.barcell{width:320px}.swatch{display:inline-block;width:10px;height:10px;margin-right:4px}.cmd{font-family:monospace;font-size:12px;max-width:40em;overflow:hidden;white-space:nowrap;text-overflow:ellipsis}\
#treemap{position:relative;width:100%;height:520px;border:1px solid #999}\
.cell{position:absolute;box-sizing:border-box;border:1px solid rgba(255,255,255,.6);overflow:hidden;font-size:10px;color:#000}\
#hover{font-family:monospace;min-height:1.5em}";

/// Squarified treemap (Bruls, Huizing, van Wijk) of the embedded tree:
/// leaves become absolutely positioned cells.
const SCRIPT: &str = r#"
(function(){
var tree=JSON.parse(document.getElementById('tree').textContent);
var box=document.getElementById('treemap'),hover=document.getElementById('hover');
var W=box.clientWidth||1000,H=box.clientHeight||520;
function worst(row,side,scale){var s=0,mx=0,mn=Infinity;for(var i=0;i<row.length;i++){var a=row[i][1]*scale;s+=a;mx=Math.max(mx,a);mn=Math.min(mn,a);}
var s2=s*s,w2=side*side;return Math.max(w2*mx/s2,s2/(w2*mn));}
function place(row,x,y,w,h,scale,path){var s=0;for(var i=0;i<row.length;i++)s+=row[i][1]*scale;
if(w>=h){var cw=s/h,cy=y;for(var i=0;i<row.length;i++){var ch=row[i][1]*scale/cw;lay(row[i],x,cy,cw,ch,path);cy+=ch;}return [x+cw,y,w-cw,h];}
var rh=s/w,cx=x;for(var i=0;i<row.length;i++){var cw2=row[i][1]*scale/rh;lay(row[i],cx,y,cw2,rh,path);cx+=cw2;}return [x,y+rh,w,h-rh];}
function squarify(kids,x,y,w,h,total,path){if(total<=0||w<1||h<1)return;var scale=w*h/total,row=[],i=0,r=[x,y,w,h];
while(i<kids.length){var side=Math.min(r[2],r[3]),c=kids[i];
if(row.length===0||worst(row.concat([c]),side,scale)<=worst(row,side,scale)){row.push(c);i++;}
else{r=place(row,r[0],r[1],r[2],r[3],scale,path);row=[];}}
if(row.length)place(row,r[0],r[1],r[2],r[3],scale,path);}
function lay(n,x,y,w,h,path){var p=(path==='/'?'':path)+'/'+n[0];
if(n[3].length){squarify(n[3],x,y,w,h,n[1],p);return;}
var d=document.createElement('div');d.className='cell';d.style.left=x+'px';d.style.top=y+'px';d.style.width=Math.max(w,0)+'px';d.style.height=Math.max(h,0)+'px';
d.style.background=COLOURS[n[2]]||'#ccc';d.setAttribute('data-path',p);d.setAttribute('data-size',n[1]);d.setAttribute('data-layer',n[2]);
d.title=p+' '+n[1]+' bytes, layer '+n[2];if(w>60&&h>14)d.textContent=n[0];
d.onmouseover=function(){hover.textContent=d.title;};box.appendChild(d);}
squarify(tree[3],0,0,W,H,tree[1],'/');
box.setAttribute('data-cells',box.children.length);
})();
"#;
