//! Links into the AWS console for a job and its log stream, for the region (and partition) the
//! job runs in.

/// The console's host for `region`: regional in the commercial partition, the partition's own
/// domain in China and GovCloud.
fn console_base(region: &str) -> String {
    if region.starts_with("cn-") {
        "https://console.amazonaws.cn".to_string()
    } else if region.starts_with("us-gov-") {
        "https://console.amazonaws-us-gov.com".to_string()
    } else {
        format!("https://{region}.console.aws.amazon.com")
    }
}

/// The region of a job ARN (`arn:aws:batch:REGION:ACCOUNT:job/ID`).
pub fn region_of_arn(arn: &str) -> Option<&str> {
    arn.split(':').nth(3).filter(|r| !r.is_empty())
}

/// The Batch console's page of job `job_id` (an array child: `ID:INDEX`).
pub fn job_url(region: &str, job_id: &str) -> String {
    format!(
        "{}/batch/home?region={region}#jobs/detail/{}",
        console_base(region),
        component(job_id)
    )
}

/// The CloudWatch console's page of one log stream.
pub fn log_stream_url(region: &str, group: &str, stream: &str) -> String {
    format!(
        "{}/cloudwatch/home?region={region}#logsV2:log-groups/log-group/{}/log-events/{}",
        console_base(region),
        fragment_component(group),
        fragment_component(stream)
    )
}

/// Percent-encoding as JavaScript's `encodeURIComponent`.
fn component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The CloudWatch console reads names in its `#logsV2:` fragment encoded twice, with `$` in
/// place of the outer `%`: `/aws/batch/job` is `$252Faws$252Fbatch$252Fjob`.
fn fragment_component(s: &str) -> String {
    component(s).replace('%', "$25")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_links_follow_the_region_and_partition() {
        assert_eq!(
            job_url("eu-west-1", "abc:3"),
            "https://eu-west-1.console.aws.amazon.com/batch/home?region=eu-west-1#jobs/detail/abc%3A3"
        );
        assert_eq!(
            job_url("cn-north-1", "abc"),
            "https://console.amazonaws.cn/batch/home?region=cn-north-1#jobs/detail/abc"
        );
        assert!(job_url("us-gov-west-1", "abc")
            .starts_with("https://console.amazonaws-us-gov.com/batch/home?region=us-gov-west-1#"));
        assert_eq!(
            region_of_arn("arn:aws:batch:ap-south-1:123456789012:job/abc"),
            Some("ap-south-1")
        );
        assert_eq!(region_of_arn("abc"), None);
    }

    #[test]
    fn log_links_encode_names_as_the_console_does() {
        assert_eq!(
            log_stream_url("us-east-1", "/aws/batch/demo-dev", "prepare/default/0f1e"),
            "https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1\
             #logsV2:log-groups/log-group/$252Faws$252Fbatch$252Fdemo-dev/log-events/\
             prepare$252Fdefault$252F0f1e"
        );
    }
}
