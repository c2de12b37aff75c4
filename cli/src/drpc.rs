//! `squall drpc-client`, in the shape of Storm's `storm drpc-client`.

use anyhow::bail;
use squall_api::Config;
use squall_drpc::DrpcClient;

/// The calls `squall drpc-client` makes: with `-f FUNCTION` every argument is an
/// argument of that function; without, the arguments are `FUNCTION ARGUMENT` pairs.
pub fn calls(function: Option<&str>, args: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    match function {
        Some(f) => {
            if args.is_empty() {
                bail!("nothing to call: give the arguments of '{f}' after -f {f}");
            }
            Ok(args.iter().map(|a| (f.to_owned(), a.clone())).collect())
        }
        None => {
            if args.is_empty() {
                bail!("nothing to call: give -f FUNCTION ARGUMENT... or FUNCTION ARGUMENT pairs");
            }
            if !args.len().is_multiple_of(2) {
                bail!(
                    "without -f, arguments come in pairs (FUNCTION ARGUMENT ...), got {} \
                     arguments; use -f FUNCTION to call one function with each argument",
                    args.len()
                );
            }
            Ok(args
                .chunks(2)
                .map(|p| (p[0].clone(), p[1].clone()))
                .collect())
        }
    }
}

/// One line of output, as Storm prints it: `FUNCTION "ARGUMENT" => "RESULT"`.
pub fn line(function: &str, argument: &str, result: &str) -> String {
    format!("{function} \"{argument}\" => \"{result}\"")
}

/// Makes the calls in order against `drpc.servers` / `drpc.port`, printing one line per
/// answer; stops at the first error (a timeout, a failed request, no server).
pub fn run(conf: &Config, function: Option<&str>, args: &[String]) -> anyhow::Result<()> {
    let calls = calls(function, args)?;
    let client = DrpcClient::from_conf(conf)?;
    for (f, a) in calls {
        let result = client.execute(&f, &a)?;
        println!("{}", line(&f, &a, &result));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn calls_follow_storms_drpc_client() {
        assert_eq!(
            calls(Some("words"), &v(&["a b", "c"])).unwrap(),
            vec![("words".into(), "a b".into()), ("words".into(), "c".into())]
        );
        assert_eq!(
            calls(None, &v(&["f", "1", "g", "2"])).unwrap(),
            vec![("f".into(), "1".into()), ("g".into(), "2".into())]
        );
        let e = calls(None, &v(&["f", "1", "g"])).unwrap_err().to_string();
        assert!(e.contains("pairs") && e.contains("got 3"), "{e}");
        assert!(calls(None, &[]).is_err());
        assert!(calls(Some("f"), &[]).is_err());
        assert_eq!(line("words", "cat dog", "2"), r#"words "cat dog" => "2""#);
    }
}
