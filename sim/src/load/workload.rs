//! The request generator: system prompts, questions and conversations.
//!
//! Every workload has G groups, each with its own system prompt of S tokens; a request is a
//! group's conversation plus a fresh question of Q tokens. The multi-turn workloads (`multi-turn`,
//! `code-assistant`, `cjk-chat`) keep a conversation for T turns and append, as a client does, the
//! reply the pod really produced before the next question; the others send one turn each.

use std::collections::VecDeque;
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::args::{LoadArgs, Workload};
use super::text::{self, Style};
use crate::tokenizer::Tokenizer;

impl Workload {
    /// Whether conversations go on for several turns, each resending the history.
    pub fn multi_turn(self) -> bool {
        matches!(self, Workload::MultiTurn | Workload::CodeAssistant | Workload::CjkChat)
    }

    fn style(self) -> Style {
        match self {
            Workload::CodeAssistant => Style::Code,
            Workload::CjkChat => Style::Chinese,
            Workload::SharedPrefix | Workload::MultiTurn | Workload::LoraMix => Style::Prose,
        }
    }
}

/// A conversation in progress (multi-turn) or a one-shot request's context.
#[derive(Debug, Clone)]
pub(super) struct Conversation {
    /// Numbered from 0 in the order conversations start.
    pub id: usize,
    pub group: usize,
    pub turn: usize,
    pub messages: Vec<(String, String)>,
}

/// The request generator (shared by every sender; a mutex around it is cheap next to a request).
pub(super) struct Generator {
    workload: Workload,
    pub rng: SmallRng,
    tokenizer: Arc<Tokenizer>,
    system_prompts: Vec<String>,
    question_tokens: usize,
    turns: usize,
    models: Vec<String>,
    base_model: String,
    base_share: f64,
    idle: VecDeque<Conversation>,
    next_id: usize,
    /// `--conversations`: no more conversations than this are started.
    max_conversations: Option<usize>,
    /// Conversations that ended (all their turns, or a failed one).
    ended: usize,
}

/// What a sender does next.
pub(super) enum Next {
    Send(Conversation, String),
    /// Every conversation allowed is in flight: try again when one comes back.
    Wait,
    /// Every conversation allowed has ended.
    Done,
}

/// The system prompt of group `g`: an opening line that differs from the first token on, then S
/// tokens of the workload's kind of text.
fn system_prompt(workload: Workload, g: usize, rng: &mut SmallRng, tokenizer: &Tokenizer, tokens: usize) -> String {
    match workload {
        Workload::CodeAssistant => {
            let head = format!(
                "You are coding assistant {g} for this repository. Answer with code, and call a tool when it helps.\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n<tools>"
            );
            let body = text::text(Style::Code, rng, tokenizer, tokens.saturating_sub(tokenizer.count(&head)));
            format!("{head}{body}\n</tools>")
        }
        Workload::CjkChat => {
            let head = format!("你是第{g}号助手，请用中文简洁地回答。");
            let body = text::text(Style::Chinese, rng, tokenizer, tokens.saturating_sub(tokenizer.count(&head)));
            format!("{head}{body}")
        }
        Workload::SharedPrefix | Workload::MultiTurn | Workload::LoraMix => {
            let head = format!("You are assistant {g}.");
            let body = text::text(Style::Prose, rng, tokenizer, tokens.saturating_sub(tokenizer.count(&head)));
            format!("{head}{body}")
        }
    }
}

/// The system prompt the workload named `workload` sends for group 0 with this seed (for
/// `sim tokenize --sample`): the text whose characters-per-token ratio a fleet sees.
pub fn sample_text(workload: Workload, tokenizer: &Tokenizer, tokens: usize, seed: u64) -> String {
    let mut rng = SmallRng::seed_from_u64(seed);
    system_prompt(workload, 0, &mut rng, tokenizer, tokens)
}

impl Generator {
    pub fn new(args: &LoadArgs, workload: Workload, models: Vec<String>, tokenizer: Arc<Tokenizer>) -> Self {
        let system_prompts = (0..args.groups.max(1))
            .map(|g| {
                let mut r = SmallRng::seed_from_u64(args.seed.wrapping_mul(1_000_003).wrapping_add(g as u64));
                system_prompt(workload, g, &mut r, &tokenizer, args.system_tokens)
            })
            .collect();
        Generator {
            workload,
            rng: SmallRng::seed_from_u64(args.seed),
            tokenizer,
            system_prompts,
            question_tokens: args.question_tokens.max(1),
            turns: args.turns.max(1),
            models,
            base_model: args.model.clone(),
            base_share: if workload == Workload::LoraMix { args.base_share.clamp(0.0, 1.0) } else { 0.0 },
            idle: VecDeque::new(),
            next_id: 0,
            max_conversations: args.conversations.filter(|_| workload.multi_turn()),
            ended: 0,
        }
    }

    /// The next request (a conversation with a new user question appended, and the model to ask),
    /// or why there is none yet.
    pub fn next(&mut self) -> Next {
        let waiting = if self.workload.multi_turn() { self.idle.pop_front() } else { None };
        let mut conv = match (waiting, self.max_conversations) {
            (Some(conv), _) => conv,
            (None, Some(max)) if self.next_id >= max => {
                return if self.ended >= max { Next::Done } else { Next::Wait };
            }
            (None, _) => {
                let group = self.rng.random_range(0..self.system_prompts.len());
                let id = self.next_id;
                self.next_id += 1;
                Conversation {
                    id,
                    group,
                    turn: 0,
                    messages: vec![("system".into(), self.system_prompts[group].clone())],
                }
            }
        };
        let question = text::question(self.workload.style(), &mut self.rng, &self.tokenizer, self.question_tokens);
        conv.messages.push(("user".into(), question));
        conv.turn += 1;
        let model = if self.base_share > 0.0 && self.rng.random::<f64>() < self.base_share {
            self.base_model.clone()
        } else {
            self.models[self.rng.random_range(0..self.models.len())].clone()
        };
        Next::Send(conv, model)
    }

    /// Returns a conversation after its reply: a multi-turn workload appends the reply the pod sent
    /// and keeps the conversation for its next turn.
    pub fn done(&mut self, mut conv: Conversation, reply: Option<String>) {
        if !self.workload.multi_turn() {
            return;
        }
        match reply {
            Some(r) if conv.turn < self.turns => {
                conv.messages.push(("assistant".into(), r));
                self.idle.push_back(conv);
            }
            _ => self.ended += 1, // finished or failed: a new conversation takes its place
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        load: LoadArgs,
    }

    fn generator(workload: &str, extra: &[&str]) -> Generator {
        let argv =
            ["sim", "--target", "http://127.0.0.1:1", "--workload", workload].into_iter().chain(extra.iter().copied());
        let args = Cli::try_parse_from(argv).unwrap().load;
        let plan = args.plan().unwrap();
        Generator::new(&args, plan.workload, vec![args.model.clone()], Arc::new(Tokenizer::cl100k().unwrap()))
    }

    fn chars_per_token(text: &str) -> f64 {
        text.chars().count() as f64 / Tokenizer::cl100k().unwrap().count(text) as f64
    }

    #[test]
    fn system_prompts_have_about_the_requested_tokens_and_differ_from_the_first_token() {
        for w in ["shared-prefix", "code-assistant", "cjk-chat"] {
            let g = generator(w, &["--groups", "3", "--system-tokens", "800"]);
            let t = Tokenizer::cl100k().unwrap();
            for p in &g.system_prompts {
                let n = t.count(p);
                assert!((800..=1000).contains(&n), "{w}: {n} tokens");
            }
            let first_blocks: Vec<Vec<u32>> = g.system_prompts.iter().map(|p| t.encode(p)[..16].to_vec()).collect();
            assert!(
                first_blocks.iter().enumerate().all(|(i, b)| !first_blocks[..i].contains(b)),
                "{w}: groups share no first block"
            );
        }
    }

    #[test]
    fn each_workload_sends_its_kind_of_text() {
        let prose = generator("multi-turn", &["--system-tokens", "600"]).system_prompts[0].clone();
        let code = generator("code-assistant", &["--system-tokens", "600"]).system_prompts[0].clone();
        let cjk = generator("cjk-chat", &["--system-tokens", "600"]).system_prompts[0].clone();
        assert!(chars_per_token(&prose) > 4.5, "prose {:.2}", chars_per_token(&prose));
        assert!((2.5..4.5).contains(&chars_per_token(&code)), "code {:.2}", chars_per_token(&code));
        assert!(chars_per_token(&cjk) < 1.6, "cjk {:.2}", chars_per_token(&cjk));
        assert!(code.contains("\"type\": \"function\"") && code.contains("def "));
        assert!(cjk.chars().filter(|c| ('\u{4e00}'..='\u{9fff}').contains(c)).count() > 300);
    }

    fn send(next: Next) -> Conversation {
        match next {
            Next::Send(conv, _) => conv,
            Next::Wait | Next::Done => panic!("expected a request"),
        }
    }

    #[test]
    fn a_conversation_cap_waits_for_a_turn_and_ends_when_every_conversation_has() {
        let mut g = generator("multi-turn", &["--turns", "2", "--conversations", "2", "--system-tokens", "50"]);
        let (a, b) = (send(g.next()), send(g.next()));
        assert!(matches!(g.next(), Next::Wait), "both conversations are in flight: no third starts");
        g.done(a, Some("reply".into()));
        let a = send(g.next());
        assert_eq!((a.id, a.turn), (0, 2));
        g.done(a, Some("reply".into()));
        assert!(matches!(g.next(), Next::Wait), "one has ended, the other is in flight");
        g.done(b, None);
        assert!(matches!(g.next(), Next::Done));
    }

    #[test]
    fn multi_turn_workloads_append_the_reply_and_one_shot_workloads_do_not() {
        for (w, keeps) in [("multi-turn", true), ("code-assistant", true), ("cjk-chat", true), ("shared-prefix", false)]
        {
            let mut g = generator(w, &["--turns", "3", "--system-tokens", "50", "--question-tokens", "20"]);
            let conv = send(g.next());
            let id = conv.id;
            g.done(conv, Some("the reply the pod sent".into()));
            let next = send(g.next());
            assert_eq!(next.id == id, keeps, "{w}");
            if keeps {
                assert_eq!(next.turn, 2);
                assert_eq!(next.messages[2], ("assistant".to_string(), "the reply the pod sent".to_string()));
                assert_eq!(next.messages.len(), 4, "system, question, reply, question");
            }
        }
    }
}
