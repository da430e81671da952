//! Text that reads like what the workloads stand for: English prose, code with JSON tool schemas,
//! and Chinese chat. Lengths are in tokens of the load generator's tokenizer (cl100k_base unless
//! `--tokenizer`/`--vocab` say otherwise), so `--system-tokens 1000` means about 1,000 tokens on a
//! fleet with the same tokenizer, whatever the kind of text.
//!
//! The word lists are written here for the purpose; the sentences mean nothing, but their words,
//! punctuation and layout are those of the kind of text, which is what a tokenizer's ratio depends on.

use std::sync::OnceLock;

use rand::Rng;
use rand::rngs::SmallRng;

use crate::tokenizer::Tokenizer;

/// The kind of text a workload sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Prose,
    Code,
    Chinese,
}

const PROSE_WORDS: &str = "the of and to a in is that for it as with be on not this are by or from at which an have all can \
    when their there each will more about other many some these would into only also after before \
    between customer account request policy service answer question support order payment invoice \
    shipping delivery refund product warranty subscription contract agreement information document \
    section paragraph summary details example instructions assistant response language message \
    conversation reference source citation number always never carefully briefly politely clearly \
    exactly usually immediately important relevant available necessary possible different previous \
    following specific general personal official internal external current recent complete explain \
    describe provide include mention confirm verify check review update cancel change contact escalate \
    forward recommend suggest require allow prevent company team manager department office region \
    country market price discount month week day hour minute period deadline schedule calendar meeting \
    report problem issue error mistake complaint feedback experience quality standard security privacy \
    data record history profile address email phone website should must may might could does did has had \
    was were been being your our they them you we he she his her its who what how why because however \
    therefore although unless whether while during within without understand remember consider continue \
    appropriate responsible professional technical";

/// Longer and rarer words, which BPE splits into several tokens (prose is not only common words).
const RARE_WORDS: &str = "reimbursement troubleshooting configurable acknowledgement misconfigured prorated nonrefundable \
    authorisation reconciliation eligibility jurisdiction indemnification unsubscribe deactivation \
    multifactor onboarding chargeback preauthorized backordered itemised consolidated discrepancy \
    escalation intermittent throttled latency Zurich Lisbon Nairobi Osaka Quebec Tallinn Gdansk Mumbai \
    Acme Contoso Fabrikam Northwind Globex Initech Umbrella Hooli Vandelay Wonka Stark";

const CHINESE_WORDS: &str = "我们 你们 他们 系统 服务器 请求 用户 数据 缓存 模型 问题 答案 时间 今天 明天 工作 公司 客户 订单 支付 退款 产品 服务 政策 合同 信息 文件 内容 部分 情况 方法 原因 结果 \
    需要 可以 应该 必须 已经 正在 如果 因为 所以 但是 而且 或者 然后 首先 其次 最后 非常 比较 特别 重要 简单 复杂 清楚 详细 准确 及时 安全 稳定 快速 检查 确认 更新 修改 \
    取消 联系 处理 解决 提供 包括 说明 介绍 建议 推荐 希望 认为 知道 了解 发现 记录 历史 地址 电话 邮件 网站 账户 价格 折扣 质量 标准 经验 反馈 投诉 错误 部门 经理 团队 \
    会议 报告 计划 目标 市场 地区 国家 城市 学生 老师 学校 朋友 家人";
const CHINESE_PARTICLES: &str = "的 了 和 在 是 把 对 也 都 就 还 要";

const IDENTS: &str = "user order item cart price total config cache request response session token client server pool \
    endpoint metrics queue batch retry timeout limit record event payload header status result value \
    index count name path file line";
const TYPES: &str = "string integer number boolean";
const CODE_VERBS: &str = "get set load save parse build fetch update delete list";

/// The word lists above, split once per process.
struct Words {
    prose: Vec<&'static str>,
    rare: Vec<&'static str>,
    chinese: Vec<&'static str>,
    particles: Vec<&'static str>,
    idents: Vec<&'static str>,
    types: Vec<&'static str>,
    verbs: Vec<&'static str>,
}

fn w() -> &'static Words {
    static WORDS: OnceLock<Words> = OnceLock::new();
    WORDS.get_or_init(|| {
        let split = |list: &'static str| list.split_whitespace().collect();
        Words {
            prose: split(PROSE_WORDS),
            rare: split(RARE_WORDS),
            chinese: split(CHINESE_WORDS),
            particles: split(CHINESE_PARTICLES),
            idents: split(IDENTS),
            types: split(TYPES),
            verbs: split(CODE_VERBS),
        }
    })
}

fn pick<'a>(rng: &mut SmallRng, list: &[&'a str]) -> &'a str {
    list[rng.random_range(0..list.len())]
}

/// Text of about `tokens` tokens: units of the style added until the count is reached.
pub fn text(style: Style, rng: &mut SmallRng, tokenizer: &Tokenizer, tokens: usize) -> String {
    let mut out = String::new();
    let mut have = 0usize;
    while have < tokens {
        let unit = unit(style, rng);
        have += tokenizer.count(&unit);
        out.push_str(&unit);
    }
    out
}

/// One unit of text: a sentence, a function or a tool schema.
pub fn unit(style: Style, rng: &mut SmallRng) -> String {
    match style {
        Style::Prose => prose_sentence(rng),
        Style::Chinese => chinese_sentence(rng, "。"),
        Style::Code if rng.random_bool(0.55) => tool_schema(rng),
        Style::Code => python_function(rng),
    }
}

/// ` Word word, word word word.` (leading space, so sentences join as prose).
fn prose_sentence(rng: &mut SmallRng) -> String {
    let n = rng.random_range(8..22);
    let mut s = String::with_capacity(n * 8);
    for i in 0..n {
        let w = if rng.random_bool(0.16) { pick(rng, &w().rare) } else { pick(rng, &w().prose) };
        s.push(' ');
        if i == 0 {
            let mut c = w.chars();
            if let Some(first) = c.next() {
                s.extend(first.to_uppercase());
                s.push_str(c.as_str());
            }
        } else {
            s.push_str(w);
        }
        if i + 1 < n && i > 2 && rng.random_bool(0.1) {
            s.push(',');
        }
        if i + 1 < n && rng.random_bool(0.04) {
            s.push_str(&figure(rng));
        }
    }
    s.push(if rng.random_bool(0.1) { '?' } else { '.' });
    s
}

/// A number as prose has them: an amount, a date, a reference or a count.
fn figure(rng: &mut SmallRng) -> String {
    match rng.random_range(0..4) {
        0 => format!(" ${}.{:02}", rng.random_range(1..2000), rng.random_range(0..100)),
        1 => format!(" on {}/{}/20{}", rng.random_range(1..29), rng.random_range(1..13), rng.random_range(19..27)),
        2 => format!(" (ref. {}-{})", pick(rng, &["INV", "ORD", "TCK", "CASE"]), rng.random_range(1000..99999)),
        _ => format!(" {} days", rng.random_range(2..90)),
    }
}

/// A Chinese sentence of words and particles, commas every few words, ending with `end`.
fn chinese_sentence(rng: &mut SmallRng, end: &str) -> String {
    let n = rng.random_range(6..16);
    let mut s = String::new();
    for i in 0..n {
        s.push_str(pick(rng, &w().chinese));
        if rng.random_bool(0.35) {
            s.push_str(pick(rng, &w().particles));
        }
        if i + 1 < n && i > 1 && rng.random_bool(0.15) {
            s.push('，');
        }
    }
    s.push_str(end);
    s
}

fn ident(rng: &mut SmallRng) -> String {
    format!("{}_{}", pick(rng, &w().idents), pick(rng, &w().idents))
}

/// One OpenAI-style function schema, on its own line (as Qwen's template lists tools).
fn tool_schema(rng: &mut SmallRng) -> String {
    let name = format!("{}_{}", pick(rng, &w().verbs), ident(rng));
    let n = rng.random_range(2..6);
    let params: Vec<String> = (0..n).map(|_| tool_parameter(rng)).collect();
    let first = params.first().and_then(|p| p.split('"').nth(1)).unwrap_or("id").to_string();
    let doc: Vec<&str> = (0..rng.random_range(4..9)).map(|_| pick(rng, &w().prose)).collect();
    format!(
        "\n{{\"type\": \"function\", \"function\": {{\"name\": \"{name}\", \"description\": \"{}.\", \"parameters\": {{\"type\": \"object\", \"properties\": {{{}}}, \"required\": [\"{first}\"]}}}}}}",
        doc.join(" "),
        params.join(", ")
    )
}

/// One property of a tool's parameters: a type, a short description, and an enum or bounds.
fn tool_parameter(rng: &mut SmallRng) -> String {
    let p = ident(rng);
    let words: Vec<&str> = (0..rng.random_range(2..5)).map(|_| pick(rng, &w().prose)).collect();
    let kind = pick(rng, &w().types);
    let extra = match kind {
        "string" if rng.random_bool(0.5) => {
            let values: Vec<String> =
                (0..rng.random_range(2..5)).map(|_| format!("\"{}\"", pick(rng, &w().idents))).collect();
            format!(", \"enum\": [{}]", values.join(", "))
        }
        "integer" | "number" => format!(", \"minimum\": 0, \"maximum\": {}", rng.random_range(1..10_000)),
        _ => String::new(),
    };
    format!("\"{p}\": {{\"type\": \"{kind}\", \"description\": \"{}\"{extra}}}", words.join(" "))
}

/// A small Python function with type hints, a docstring, branches and a return.
fn python_function(rng: &mut SmallRng) -> String {
    let name = format!("{}_{}", pick(rng, &w().verbs), ident(rng));
    let (a, b) = (ident(rng), pick(rng, &w().idents));
    let doc: Vec<&str> = (0..rng.random_range(3..7)).map(|_| pick(rng, &w().prose)).collect();
    let (key, field) = (pick(rng, &w().idents), pick(rng, &w().idents));
    let (limit, code) = (rng.random_range(2..500), rng.random_range(400..600));
    format!(
        "\n\ndef {name}({a}: dict[str, Any], {b}: list | None = None) -> list:\n    \"\"\"{}.\"\"\"\n    result = {a}.get(\"{key}\", {{}})\n    if {b} is None or len(result) > {limit}:\n        raise ValueError(f\"{name}: bad {{{b}!r}} ({code})\")\n    for k, v in result.items():\n        {b}.append({{\"{field}\": v[\"{key}\"], \"k\": k}})\n    return {b}[-{limit}:]\n",
        doc.join(" ")
    )
}

/// A user question of about `tokens` tokens in the style.
pub fn question(style: Style, rng: &mut SmallRng, tokenizer: &Tokenizer, tokens: usize) -> String {
    match style {
        Style::Prose => format!("Question:{}", text(style, rng, tokenizer, tokens.saturating_sub(2))),
        Style::Chinese => {
            let mut q = text(style, rng, tokenizer, tokens.saturating_sub(12));
            q.push_str(&chinese_sentence(rng, "？"));
            q
        }
        Style::Code => {
            let f = ident(rng);
            let intro = format!(
                "Why does `{}_{f}` fail with a KeyError here, and how should I fix it?\n```python",
                pick(rng, &w().verbs)
            );
            let used = tokenizer.count(&intro) + 2;
            let mut body = String::new();
            while used + tokenizer.count(&body) < tokens {
                body.push_str(&python_function(rng));
            }
            format!("{intro}{body}```")
        }
    }
}
