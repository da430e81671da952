//! Errors → local replies with a JSON body in the OpenAI error shape:
//! `{"error":{"message":"...","type":"...","param":null,"code":"..."}}`.

use crate::request::RequestError;
use crate::scheduler::ScheduleError;

/// A reply the filter sends instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub code: &'static str,
    pub body: Vec<u8>,
}

impl LocalReply {
    fn new(status: u16, kind: &str, code: &'static str, param: Option<&str>, message: &str) -> Self {
        let body = serde_json::json!({
            "error": {"message": message, "type": kind, "param": param, "code": code}
        });
        Self { status, code, body: body.to_string().into_bytes() }
    }

    pub fn missing_body() -> Self {
        Self::new(400, "invalid_request_error", "missing_body", None, "an inference request needs a JSON body")
    }

    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            413,
            "invalid_request_error",
            "request_too_large",
            None,
            &format!("request body exceeds the gateway's limit of {limit} bytes"),
        )
    }

    pub fn internal(message: &str) -> Self {
        Self::new(500, "server_error", "internal_error", None, message)
    }
}

impl From<&RequestError> for LocalReply {
    fn from(e: &RequestError) -> Self {
        let message = e.to_string();
        match e {
            RequestError::UnknownModel(_) => {
                Self::new(404, "invalid_request_error", "model_not_found", Some("model"), &message)
            }
            RequestError::MissingModel => {
                Self::new(400, "invalid_request_error", "missing_model", Some("model"), &message)
            }
            RequestError::InvalidField(field, _) => {
                Self::new(400, "invalid_request_error", "invalid_field", Some(field), &message)
            }
            RequestError::MissingPrompt(crate::request::ApiKind::ChatCompletions) => {
                Self::new(400, "invalid_request_error", "missing_field", Some("messages"), &message)
            }
            RequestError::MissingPrompt(crate::request::ApiKind::Completions) => {
                Self::new(400, "invalid_request_error", "missing_field", Some("prompt"), &message)
            }
            RequestError::NotJson(_) | RequestError::NotAnObject => {
                Self::new(400, "invalid_request_error", "invalid_json", None, &message)
            }
        }
    }
}

impl From<&ScheduleError> for LocalReply {
    fn from(e: &ScheduleError) -> Self {
        let message = e.to_string();
        match e {
            ScheduleError::EmptyPool | ScheduleError::SubsetNamesNoMember => {
                Self::new(503, "server_error", "no_ready_endpoint", None, &message)
            }
            ScheduleError::ModelNotServed(_) => {
                Self::new(404, "invalid_request_error", "model_not_found", Some("model"), &message)
            }
            ScheduleError::Shed { .. } => Self::new(429, "rate_limit_error", "pool_saturated", None, &message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(reply: &LocalReply) -> serde_json::Value {
        serde_json::from_slice(&reply.body).unwrap_or_default()
    }

    #[test]
    fn every_error_is_an_openai_shaped_json_body() {
        let cases = [
            (LocalReply::from(&RequestError::NotJson("x".into())), 400, "invalid_json"),
            (LocalReply::from(&RequestError::UnknownModel("gpt".into())), 404, "model_not_found"),
            (LocalReply::from(&RequestError::MissingModel), 400, "missing_model"),
            (LocalReply::from(&ScheduleError::EmptyPool), 503, "no_ready_endpoint"),
            (LocalReply::from(&ScheduleError::SubsetNamesNoMember), 503, "no_ready_endpoint"),
            (LocalReply::from(&ScheduleError::ModelNotServed("gpt".into())), 404, "model_not_found"),
            (LocalReply::from(&ScheduleError::Shed { priority: -1 }), 429, "pool_saturated"),
            (LocalReply::body_too_large(10), 413, "request_too_large"),
            (LocalReply::missing_body(), 400, "missing_body"),
            (LocalReply::internal("x"), 500, "internal_error"),
        ];
        for (reply, status, code) in cases {
            assert_eq!(reply.status, status);
            let body = json(&reply);
            assert_eq!(body["error"]["code"], code);
            assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
            assert!(body["error"]["type"].is_string());
        }
        let unknown = json(&LocalReply::from(&RequestError::UnknownModel("gpt".into())));
        assert_eq!(unknown["error"]["param"], "model");
        assert!(unknown["error"]["message"].as_str().unwrap_or("").contains("gpt"));
    }
}
