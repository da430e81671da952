//! The scheduling core for the browser.
