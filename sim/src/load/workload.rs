//! The request generator: system prompts, questions and conversations.

use std::collections::VecDeque;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::args::{LoadArgs, Workload};

/// A conversation in progress (multi-turn) or a one-shot request's context.
#[derive(Debug, Clone)]
pub(super) struct Conversation {
    pub group: usize,
    pub turn: usize,
    pub messages: Vec<(String, String)>,
}

/// The request generator (shared by every sender; a mutex around it is cheap next to a request).
pub(super) struct Generator {
    workload: Workload,
    pub rng: SmallRng,
    system_prompts: Vec<String>,
    question_tokens: usize,
    turns: usize,
    models: Vec<String>,
    base_model: String,
    base_share: f64,
    idle: VecDeque<Conversation>,
}

/// A text of exactly `n` simulator tokens: words of three letters with a leading space.
fn words(rng: &mut SmallRng, n: usize) -> String {
    let mut s = String::with_capacity(n * 4);
    for _ in 0..n {
        s.push(' ');
        for _ in 0..3 {
            s.push((b'a' + rng.random_range(0..26u8)) as char);
        }
    }
    s
}

impl Generator {
    pub fn new(args: &LoadArgs, workload: Workload, models: Vec<String>) -> Self {
        let system_prompts = (0..args.groups.max(1))
            .map(|g| {
                let mut r = SmallRng::seed_from_u64(args.seed.wrapping_mul(1_000_003).wrapping_add(g as u64));
                format!("You are assistant {g}.{}", words(&mut r, args.system_tokens.saturating_sub(4)))
            })
            .collect();
        Generator {
            workload,
            rng: SmallRng::seed_from_u64(args.seed),
            system_prompts,
            question_tokens: args.question_tokens.max(1),
            turns: args.turns.max(1),
            models,
            base_model: args.model.clone(),
            base_share: if workload == Workload::LoraMix { args.base_share.clamp(0.0, 1.0) } else { 0.0 },
            idle: VecDeque::new(),
        }
    }

    /// The next request: a conversation with a new user question appended, and the model to ask.
    pub fn next(&mut self) -> (Conversation, String) {
        let mut conv = match self.workload {
            Workload::MultiTurn => self.idle.pop_front(),
            _ => None,
        }
        .unwrap_or_else(|| {
            let group = self.rng.random_range(0..self.system_prompts.len());
            Conversation { group, turn: 0, messages: vec![("system".into(), self.system_prompts[group].clone())] }
        });
        let question = format!("Question:{}", words(&mut self.rng, self.question_tokens.saturating_sub(2)));
        conv.messages.push(("user".into(), question));
        conv.turn += 1;
        let model = if self.base_share > 0.0 && self.rng.random::<f64>() < self.base_share {
            self.base_model.clone()
        } else {
            self.models[self.rng.random_range(0..self.models.len())].clone()
        };
        (conv, model)
    }

    /// Returns a conversation after its reply (multi-turn keeps it for its next turn).
    pub fn done(&mut self, mut conv: Conversation, reply: Option<String>) {
        if self.workload != Workload::MultiTurn {
            return;
        }
        match reply {
            Some(r) if conv.turn < self.turns => {
                conv.messages.push(("assistant".into(), r));
                self.idle.push_back(conv);
            }
            _ => {} // finished or failed: a new conversation takes its place
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_words_have_exactly_the_requested_tokens() {
        let mut rng = SmallRng::seed_from_u64(3);
        assert_eq!(crate::tokenizer::count(&words(&mut rng, 57)), 57);
    }
}
