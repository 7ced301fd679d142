//! The text formats a scrape gets: the Prometheus text format 0.0.4 by default, OpenMetrics 1.0
//! (with its `# UNIT` lines and the closing `# EOF`) when the scraper asks for it in `Accept`, as
//! Prometheus itself does.

use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::registry::Registry;

/// A text exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

/// The `Content-Type` of OpenMetrics 1.0 text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it names it, else Prometheus.
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    /// The `Content-Type` of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// Encodes `registries` one after another, as one exposition.
pub(super) fn encode(format: Format, first: &Registry, then: &Registry) -> String {
    let mut out = String::new();
    // Encoding into a String fails only if a metric's own encoder fails, which the crate's
    // metrics and ours never do; a scrape then shows what was encoded so far.
    let encoded = match format {
        Format::Prometheus => prometheus_text::encode(&mut out, first)
            .and_then(|()| prometheus_text::encode(&mut out, then)),
        Format::OpenMetrics => text::encode_registry(&mut out, first)
            .and_then(|()| text::encode_registry(&mut out, then))
            .and_then(|()| text::encode_eof(&mut out)),
    };
    if let Err(e) = encoded {
        tracing::warn!(error = %e, "encoding the metrics");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_only_when_asked_for() {
        assert_eq!(Format::from_accept(None), Format::Prometheus);
        assert_eq!(Format::from_accept(Some("*/*")), Format::Prometheus);
        let prometheus =
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
        assert_eq!(Format::from_accept(Some(prometheus)), Format::OpenMetrics);
    }
}
