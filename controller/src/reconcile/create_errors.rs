//! What a refused create of a worker pod (or the rendezvous Service) means for the run (pure).
//! The API server refuses for reasons that pass (a ResourceQuota exhausted by the team's other
//! pods, a namespace whose ServiceAccount is not there yet, overload) and for reasons that never
//! will (Pod Security admission, an invalid pod, a LimitRange): the first are retried with backoff
//! under the run's deadline, the second fail the run at once, so no accelerator is held by the
//! workers already created. Either way the run's condition and a Warning Event name the API's
//! reason and (a bounded part of) its message.

use super::decide::Reason;

/// How much of the API server's message goes into a condition or Event.
const MAX_API_MESSAGE: usize = 512;

/// A refused create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Retried later: the run stays Pending with this reason.
    Transient(Reason),
    /// The run cannot start: it fails with this reason.
    Permanent(Reason),
}

impl Refusal {
    pub fn reason(&self) -> &Reason {
        match self {
            Refusal::Transient(r) | Refusal::Permanent(r) => r,
        }
    }
}

/// Classify the failed create of `object` (`pod bert-1`, `service bert`); `kind` prefixes the
/// condition reason (`PodCreation`). An error without an answer from the API server (connection,
/// timeout) is transient.
pub fn classify(kind: &str, object: &str, error: &kube::Error) -> Refusal {
    match error {
        kube::Error::Api(status) => classify_status(kind, object, status),
        other => Refusal::Transient((
            format!("{kind}Failed"),
            format!(
                "{object} not created yet, retrying with backoff: {}",
                bounded(&other.to_string(), MAX_API_MESSAGE)
            ),
        )),
    }
}

/// Classify the API server's refusal `status`.
fn classify_status(kind: &str, object: &str, status: &kube::core::Status) -> Refusal {
    let api_reason =
        if !status.reason.is_empty() && status.reason.bytes().all(|b| b.is_ascii_alphanumeric()) {
            status.reason.as_str()
        } else {
            "Failed"
        };
    let reason = format!("{kind}{api_reason}");
    let said = format!(
        "{api_reason} ({}): {}",
        status.code,
        bounded(&status.message, MAX_API_MESSAGE)
    );
    if let Some(refusal) = missing_priority_class(object, status) {
        return refusal;
    }
    if is_transient(status) {
        Refusal::Transient((
            reason,
            format!("{object} not created yet, retrying with backoff: {said}"),
        ))
    } else {
        Refusal::Permanent((
            reason,
            format!(
                "{object} was refused by the API server: {said}; the run cannot start and its worker pods are deleted"
            ),
        ))
    }
}

/// The Priority admission plugin refuses a pod naming a PriorityClass that does not exist
/// (`no PriorityClass with name X was found`): the run's `spec.priorityClassName` is at fault, and
/// retrying does not help until someone creates the class, so the run fails saying so.
fn missing_priority_class(object: &str, status: &kube::core::Status) -> Option<Refusal> {
    let rest = status.message.split_once("no PriorityClass with name ")?.1;
    let class = rest.strip_suffix(" was found").unwrap_or(rest);
    Some(Refusal::Permanent((
        "PriorityClassNotFound".into(),
        format!(
            "spec.priorityClassName: PriorityClass {:?} does not exist ({object} was refused by the \
             API server: {}); create the PriorityClass, or create the run again with another \
             priorityClassName; the run cannot start and its worker pods are deleted",
            bounded(class, 253),
            bounded(&status.message, MAX_API_MESSAGE)
        ),
    )))
}

/// Refusals that a later attempt may not get: quota (the team's other pods finish, or the quota
/// is raised), a ServiceAccount not created yet (a new namespace), throttling and server errors.
fn is_transient(status: &kube::core::Status) -> bool {
    let m = status.message.as_str();
    match status.code {
        429 | 500 | 502 | 503 | 504 => true,
        403 => {
            m.contains("exceeded quota")
                || m.contains("status unknown for quota")
                || m.contains("error looking up service account")
        }
        _ => false,
    }
}

/// `text` cut to at most `max` bytes at a character boundary, marked when cut.
pub(crate) fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes cut)", &text[..end], text.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(
            serde_json::from_value(serde_json::json!({
                "status": "Failure", "code": code, "reason": reason, "message": message,
            }))
            .unwrap(),
        ))
    }

    #[test]
    fn quota_is_retried_pod_security_and_invalid_pods_fail_the_run() {
        // The real API server's messages (v1.36).
        let quota = status(
            403,
            "Forbidden",
            r#"pods "bert-1" is forbidden: exceeded quota: pods, requested: pods=1, used: pods=1, limited: pods=1"#,
        );
        let Refusal::Transient((reason, message)) = classify("PodCreation", "pod bert-1", &quota)
        else {
            panic!("quota is transient");
        };
        assert_eq!(reason, "PodCreationForbidden");
        assert!(message.starts_with("pod bert-1 not created yet, retrying with backoff: Forbidden (403): pods \"bert-1\" is forbidden: exceeded quota"), "{message}");

        let psa = status(
            403,
            "Forbidden",
            r#"pods "bert-0" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false"#,
        );
        let refusal = classify("PodCreation", "pod bert-0", &psa);
        assert!(matches!(refusal, Refusal::Permanent(_)), "{refusal:?}");
        assert_eq!(refusal.reason().0, "PodCreationForbidden");
        assert!(refusal.reason().1.contains("violates PodSecurity"));

        let invalid = status(
            422,
            "Invalid",
            r#"Pod "bert-0" is invalid: spec.volumes[0].name: Required value"#,
        );
        let refusal = classify("PodCreation", "pod bert-0", &invalid);
        assert!(matches!(refusal, Refusal::Permanent(_)));
        assert_eq!(refusal.reason().0, "PodCreationInvalid");

        let lost = kube::Error::Service("connection reset".into());
        let r = classify("PodCreation", "pod bert-1", &lost);
        assert!(matches!(r, Refusal::Transient(_)), "{r:?}");
        assert_eq!(r.reason().0, "PodCreationFailed");
        assert!(r.reason().1.contains("connection reset"), "{r:?}");

        for code in [429, 500, 503] {
            let r = classify("ServiceCreation", "service bert", &status(code, "", "busy"));
            assert!(matches!(r, Refusal::Transient(_)), "{code}");
            assert_eq!(r.reason().0, "ServiceCreationFailed");
        }
    }

    #[test]
    fn a_missing_priority_class_fails_the_run_naming_the_field() {
        // The real API server's message (v1.36, Priority admission plugin).
        let missing = status(
            403,
            "Forbidden",
            r#"pods "bert-0" is forbidden: no PriorityClass with name urgent was found"#,
        );
        let refusal = classify("PodCreation", "pod bert-0", &missing);
        let Refusal::Permanent((reason, message)) = refusal else {
            panic!("a missing PriorityClass is permanent: {refusal:?}");
        };
        assert_eq!(reason, "PriorityClassNotFound");
        assert!(
            message.starts_with(r#"spec.priorityClassName: PriorityClass "urgent" does not exist"#),
            "{message}"
        );
    }

    #[test]
    fn the_api_message_is_bounded_and_the_reason_is_a_condition_reason() {
        let long = "é".repeat(2000);
        let r = classify("PodCreation", "pod a-0", &status(422, "In valid", &long));
        assert_eq!(r.reason().0, "PodCreationFailed");
        assert!(r.reason().1.len() < 700, "{}", r.reason().1.len());
        assert!(r.reason().1.contains("bytes cut"));
    }
}
