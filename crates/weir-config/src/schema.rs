//! OpenAPI schemas of the values the configuration writes as text (durations, sizes,
//! secrets, the access log's target): a string each, with its form and an example, so the
//! admin API's document (and the console's forms made from it) say what to write.

use std::borrow::Cow;

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};

use crate::{AccessLogConfig, ByteSize, Duration, Secret, SecretUrl, Share, Start};

fn text(description: &str, pattern: Option<&str>, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(pattern)
        .examples([serde_json::Value::from(example)])
        .into()
}

macro_rules! text_schema {
    ($ty:ty, $name:literal, $desc:literal, $pattern:expr, $example:literal) => {
        impl utoipa::PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                text($desc, $pattern, $example)
            }
        }
        impl utoipa::ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

text_schema!(
    Duration,
    "Duration",
    "A duration: a whole number and a unit, ms, s, m, h or d (500ms, 2s, 5m, 1h, 7d).",
    Some(r"^\s*[0-9]+\s*(ms|s|m|h|d)\s*$"),
    "5s"
);
text_schema!(
    ByteSize,
    "ByteSize",
    "A size in bytes: a number, or a number with B, KB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024).",
    Some(r"^\s*[0-9]+\s*([KMG]i?B|B)?\s*$"),
    "1MiB"
);
text_schema!(
    Share,
    "Share",
    "A part of a whole: a percentage from 1% to 100%, or a size such as 512MiB.",
    None,
    "25%"
);
text_schema!(
    Start,
    "Start",
    "Where a new subscription starts reading its topic: new, earliest, or an RFC 3339 time.",
    None,
    "new"
);
text_schema!(
    Secret,
    "Secret",
    "A secret: env:NAME (from the environment), file:PATH (from a file), or the value itself. Never shown back.",
    None,
    "env:API_KEY"
);
text_schema!(
    SecretUrl,
    "SecretUrl",
    "A service URL that may carry a password, or env:NAME / file:PATH holding it.",
    None,
    "redis://127.0.0.1:6379"
);

impl utoipa::PartialSchema for AccessLogConfig {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(text(
                "off, stdout, stderr, or a file's path.",
                None,
                "stdout",
            ))
            .item(
                ObjectBuilder::new()
                    .property(
                        "file",
                        text("The file's path.", None, "/var/log/weir/access.log"),
                    )
                    .required("file"),
            )
            .description(Some("Where each request's JSON access-log line goes."))
            .into()
    }
}

impl utoipa::ToSchema for AccessLogConfig {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("AccessLog")
    }
}
