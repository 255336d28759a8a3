//! `rbd-relay`: parse, validate, build a plan, run it, report.
fn main() {}
