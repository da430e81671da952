//! LoRA adapters on the simulated GPU: at most `max_loras` resident, loaded on demand (the load's
//! time is charged to the step), the least recently used one replaced when no running request needs it.

use super::Engine;

/// LoRA adapter residency on the GPU: at most `max_loras`, least recently used replaced first.
#[derive(Debug, Default)]
pub(super) struct LoraSlots {
    resident: Vec<String>,
}

impl Engine {
    /// Adapters with running requests and with waiting requests, in first-seen order.
    pub fn lora_adapters(&self) -> (Vec<String>, Vec<String>) {
        let mut running: Vec<String> = Vec::new();
        let mut waiting: Vec<String> = Vec::new();
        for s in &self.running {
            if let Some(l) = &s.req.lora
                && !running.contains(l)
            {
                running.push(l.clone());
            }
        }
        for s in &self.waiting {
            if let Some(l) = &s.req.lora
                && !waiting.contains(l)
            {
                waiting.push(l.clone());
            }
        }
        (running, waiting)
    }

    /// Whether a request's adapter can run this step; loads it into a slot if needed (cost added).
    pub(super) fn admit_lora(&mut self, lora: Option<&str>, in_use: &[String], load_cost: &mut f64) -> bool {
        let Some(name) = lora else { return true };
        let max = self.config.max_loras.max(1);
        if let Some(i) = self.loras.resident.iter().position(|r| r == name) {
            // Most recently used goes last.
            let r = self.loras.resident.remove(i);
            self.loras.resident.push(r);
            return true;
        }
        let mut active: Vec<&str> = in_use.iter().map(String::as_str).collect();
        active.dedup();
        if active.iter().filter(|a| **a != name).count() >= max {
            return false;
        }
        if self.loras.resident.len() >= max {
            // Replace the least recently used adapter that no running request needs.
            match self.loras.resident.iter().position(|r| !in_use.contains(r)) {
                Some(i) => {
                    self.loras.resident.remove(i);
                }
                None => return false,
            }
        }
        self.loras.resident.push(name.to_string());
        self.stats.lora_loads += 1;
        *load_cost += self.config.time.lora_load_s;
        true
    }
}
