//! The UI's HTML pages and their assets, embedded in the binary (no build step).
//!
//! | path | page |
//! |---|---|
//! | `/`, `/index.html` | the cluster: Nimbus daemons (the leader marked), supervisors, topologies |
//! | `/topology.html?id=X[&window=W]` | a topology: stats, spouts and bolts, graph, actions, config, placement, log levels, log search |
//! | `/component.html?topology=X&id=C[&window=W]` | a component: per-executor, per-stream stats, custom gauges and errors |
//! | `/assets/...` | `squall.js`, `squall.css`, the vendored dagre layout library |
//!
//! The pages are plain HTML; `squall.js` reads Storm's REST API (`/api/v1/...`) and
//! renders every 5 s. Every string from the API is escaped before it reaches the HTML.

use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::Ui;

/// An embedded file: its URL path, content type and bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";

const ASSETS: &[Asset] = &[
    Asset {
        path: "/index.html",
        content_type: HTML,
        body: include_bytes!("../assets/index.html"),
    },
    Asset {
        path: "/topology.html",
        content_type: HTML,
        body: include_bytes!("../assets/topology.html"),
    },
    Asset {
        path: "/component.html",
        content_type: HTML,
        body: include_bytes!("../assets/component.html"),
    },
    Asset {
        path: "/assets/squall.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/squall.js"),
    },
    Asset {
        path: "/assets/squall.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/squall.css"),
    },
    Asset {
        path: "/assets/vendor/dagre/dagre.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/vendor/dagre/dagre.min.js"),
    },
    Asset {
        path: "/assets/vendor/dagre/LICENSE",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("../assets/vendor/dagre/LICENSE"),
    },
    Asset {
        path: "/assets/vendor/README.md",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("../assets/vendor/README.md"),
    },
];

fn serve(asset: &'static Asset) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, asset.content_type),
            // Small files, and a new binary may bring new ones: always revalidate.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        asset.body,
    )
        .into_response()
}

/// Routes serving the pages (`/`, `/topology.html`, ...) and their assets.
pub fn routes() -> Router<Arc<Ui>> {
    let mut router = Router::new().route("/", get(|| async { serve(&ASSETS[0]) }));
    for asset in ASSETS {
        router = router.route(asset.path, get(move || async move { serve(asset) }));
    }
    router
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_load_their_script_and_style_from_served_paths() {
        let served: Vec<&str> = ASSETS.iter().map(|a| a.path).collect();
        for page in ASSETS.iter().filter(|a| a.content_type == HTML) {
            let html = std::str::from_utf8(page.body).unwrap();
            for needed in ["/assets/squall.js", "/assets/squall.css"] {
                assert!(html.contains(needed), "{} lacks {needed}", page.path);
            }
            for src in html.split("src=\"").skip(1) {
                let url = src.split('"').next().unwrap();
                assert!(
                    served.contains(&url),
                    "{} loads {url}, which is not served",
                    page.path
                );
            }
        }
        let readme = std::str::from_utf8(
            ASSETS
                .iter()
                .find(|a| a.path.ends_with("README.md"))
                .unwrap()
                .body,
        )
        .unwrap();
        assert!(readme.contains("dagre") && readme.contains("3.1.3") && readme.contains("MIT"));
    }
}
