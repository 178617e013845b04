//! Reader for the Solomon VRPTW text format and its conversion to a routing `Problem`.
//!
//! ```text
//! C101
//! VEHICLE
//! NUMBER     CAPACITY
//!   25         200
//! CUSTOMER
//! CUST NO.  XCOORD.   YCOORD.    DEMAND   READY TIME  DUE DATE   SERVICE   TIME
//!     0      40         50          0          0       1236          0
//!     1      45         68         10        912        967         90
//! ```
//! Customer 0 is the depot. Distances are Euclidean; travel time equals distance.

use super::model::{Matrix, Problem, Role, Task, Vehicle, UNIT};
use crate::errors::{CoreError, CoreResult};

#[derive(Debug, Clone, PartialEq)]
pub struct Customer {
    pub number: i64,
    pub x: f64,
    pub y: f64,
    pub demand: f64,
    pub ready: f64,
    pub due: f64,
    pub service: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub name: String,
    pub vehicles: usize,
    pub capacity: f64,
    /// Depot first.
    pub customers: Vec<Customer>,
}

/// Largest instance read: the dense distance matrices take 16 bytes per pair of locations.
pub const MAX_CUSTOMERS: usize = 2000;

fn bad(line: usize, reason: impl Into<String>) -> CoreError {
    CoreError::invalid("solomon", format!("line {line}: {}", reason.into()))
}

fn numbers(line: &str, lineno: usize) -> CoreResult<Vec<f64>> {
    line.split_whitespace()
        .map(|tok| {
            let v: f64 = tok
                .parse()
                .map_err(|_| bad(lineno, format!("expected a number, got {tok:?}")))?;
            if !v.is_finite() || !(-1e9..=1e9).contains(&v) {
                return Err(bad(lineno, format!("number out of range: {tok}")));
            }
            Ok(v)
        })
        .collect()
}

fn is_numeric_line(line: &str) -> bool {
    line.split_whitespace()
        .next()
        .is_some_and(|t| t.starts_with(|c: char| c.is_ascii_digit() || c == '-'))
}

pub fn parse(text: &str) -> CoreResult<Instance> {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    let name = lines.first().map(|(_, l)| l.to_string()).unwrap_or_default();
    let find = |word: &str| lines.iter().position(|(_, l)| l.eq_ignore_ascii_case(word));
    let vi = find("VEHICLE").ok_or_else(|| CoreError::invalid("solomon", "missing VEHICLE section"))?;
    let ci = find("CUSTOMER").ok_or_else(|| CoreError::invalid("solomon", "missing CUSTOMER section"))?;
    if ci < vi {
        return Err(CoreError::invalid(
            "solomon",
            "the VEHICLE section must precede CUSTOMER",
        ));
    }
    let (vl, vline) = lines[vi + 1..ci]
        .iter()
        .find(|(_, l)| is_numeric_line(l))
        .ok_or_else(|| CoreError::invalid("solomon", "VEHICLE section has no NUMBER CAPACITY line"))?;
    let v = numbers(vline, *vl)?;
    if v.len() != 2 {
        return Err(bad(
            *vl,
            format!("expected NUMBER CAPACITY (2 values), got {} values", v.len()),
        ));
    }
    if v[0] < 1.0 || v[0].fract() != 0.0 || v[0] > 100_000.0 {
        return Err(bad(
            *vl,
            format!("vehicle number must be a positive integer, got {}", v[0]),
        ));
    }
    if v[1] < 0.0 {
        return Err(bad(*vl, format!("capacity must be >= 0, got {}", v[1])));
    }
    let mut customers = Vec::new();
    for &(ln, line) in &lines[ci + 1..] {
        if !is_numeric_line(line) {
            if customers.is_empty() {
                continue; // column header
            }
            return Err(bad(ln, format!("unexpected text in CUSTOMER table: {line:?}")));
        }
        let f = numbers(line, ln)?;
        if f.len() != 7 {
            return Err(bad(ln, format!("expected 7 columns, got {}", f.len())));
        }
        if f[0].fract() != 0.0 || f[0] < 0.0 {
            return Err(bad(
                ln,
                format!("customer number must be a non-negative integer, got {}", f[0]),
            ));
        }
        let c = Customer {
            number: f[0] as i64,
            x: f[1],
            y: f[2],
            demand: f[3],
            ready: f[4],
            due: f[5],
            service: f[6],
        };
        if c.number != customers.len() as i64 {
            return Err(bad(
                ln,
                format!("expected customer number {}, got {}", customers.len(), c.number),
            ));
        }
        if c.demand < 0.0 || c.service < 0.0 {
            return Err(bad(ln, "demand and service time must be >= 0"));
        }
        if c.ready > c.due {
            return Err(bad(
                ln,
                format!("ready time {} is after due date {}", c.ready, c.due),
            ));
        }
        customers.push(c);
        if customers.len() > MAX_CUSTOMERS + 1 {
            return Err(bad(
                ln,
                format!("more than {MAX_CUSTOMERS} customers (the distance matrix is dense)"),
            ));
        }
    }
    if customers.len() < 2 {
        return Err(CoreError::invalid(
            "solomon",
            "CUSTOMER table needs the depot (0) and at least one customer",
        ));
    }
    Ok(Instance {
        name,
        vehicles: v[0] as usize,
        capacity: v[1],
        customers,
    })
}

/// Euclidean distance between two customers, the float the reported cost is made of.
pub fn distance(a: &Customer, b: &Customer) -> f64 {
    (a.x - b.x).hypot(a.y - b.y)
}

impl Instance {
    /// The routing problem: tasks `i - 1` is customer `i`. Costs are distances × 1000 rounded; travel
    /// times are rounded up, so a plan feasible in integers is feasible with exact distances too.
    pub fn to_problem(&self) -> CoreResult<Problem> {
        let cs = &self.customers;
        let n = cs.len();
        let mut time = Vec::with_capacity(n * n);
        let mut cost = Vec::with_capacity(n * n);
        for a in cs {
            for b in cs {
                let d = distance(a, b) * UNIT;
                cost.push(d.round() as i64);
                time.push((d - 1e-6).ceil().max(0.0) as i64);
            }
        }
        let matrix = Matrix { n, time, cost };
        let units = |v: f64| (v * UNIT).round() as i64;
        let demand = |v: f64, ln: i64| -> CoreResult<i64> {
            if v.fract() != 0.0 {
                return Err(CoreError::invalid(
                    "solomon",
                    format!("customer {ln}: demand must be an integer"),
                ));
            }
            Ok(v as i64)
        };
        if self.capacity.fract() != 0.0 {
            return Err(CoreError::invalid("solomon", "capacity must be an integer"));
        }
        let depot = &cs[0];
        let vehicles = (0..self.vehicles)
            .map(|k| Vehicle {
                id: k as i64,
                start_loc: 0,
                end_loc: 0,
                shift_start: units(depot.ready),
                shift_end: units(depot.due),
                capacity: self.capacity as i64,
                skills: 0,
            })
            .collect();
        let tasks = cs[1..]
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Ok(Task {
                    id: c.number,
                    loc: i + 1,
                    ready: units(c.ready),
                    due: units(c.due),
                    service: units(c.service),
                    demand: demand(c.demand, c.number)?,
                    skills: 0,
                    role: Role::Single,
                })
            })
            .collect::<CoreResult<Vec<_>>>()?;
        Problem::new(matrix, vehicles, tasks, &[])
    }

    /// Float length of routes given as customer numbers (depot omitted).
    pub fn routes_cost(&self, routes: &[Vec<i64>]) -> f64 {
        let cs = &self.customers;
        routes
            .iter()
            .filter(|r| !r.is_empty())
            .map(|r| {
                let mut prev = &cs[0];
                let mut total = 0.0;
                for &c in r {
                    total += distance(prev, &cs[c as usize]);
                    prev = &cs[c as usize];
                }
                total + distance(prev, &cs[0])
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const SMALL: &str = "TINY\n\nVEHICLE\nNUMBER     CAPACITY\n  2         20\n\nCUSTOMER\n\
CUST NO.  XCOORD.   YCOORD.    DEMAND   READY TIME  DUE DATE   SERVICE   TIME\n\n\
    0      0         0          0          0       1000          0\n\
    1      10        0          5          0        100         10\n\
    2      20        0          5          0        200         10\n\
    3      0        10          5          0        300         10\n";

    #[test]
    fn parses_header_and_rows() {
        let inst = parse(SMALL).unwrap();
        assert_eq!(inst.name, "TINY");
        assert_eq!((inst.vehicles, inst.capacity, inst.customers.len()), (2, 20.0, 4));
        assert_eq!(inst.customers[2].x, 20.0);
        let p = inst.to_problem().unwrap();
        assert_eq!(p.tasks.len(), 3);
        assert_eq!(p.matrix.c(0, 2), 20_000);
        assert_eq!(p.matrix.t(1, 3), 14_143); // ceil(14142.13)
        assert_eq!(p.matrix.c(1, 3), 14_142);
        assert!((inst.routes_cost(&[vec![1, 2], vec![3]]) - 60.0).abs() < 1e-9);
    }

    #[test]
    fn rejects_malformed_text() {
        let cases = [
            ("", "missing VEHICLE"),
            ("X\nVEHICLE\n2 20\n", "missing CUSTOMER"),
            (
                "X\nVEHICLE\nCUSTOMER\n0 0 0 0 0 10 0\n1 1 1 1 0 10 0\n",
                "NUMBER CAPACITY",
            ),
            ("X\nVEHICLE\n2 20 3\nCUSTOMER\n0 0 0 0 0 10 0\n", "2 values"),
            (
                "X\nVEHICLE\n0 20\nCUSTOMER\n0 0 0 0 0 10 0\n1 1 1 1 0 10 0\n",
                "positive integer",
            ),
            (
                "X\nVEHICLE\n2 20\nCUSTOMER\n0 0 0 0 0 10 0\n1 1 1 1 0 10\n",
                "7 columns",
            ),
            (
                "X\nVEHICLE\n2 20\nCUSTOMER\n0 0 0 0 0 10 0\n1 1 x 1 0 10 0\n",
                "expected a number",
            ),
            (
                "X\nVEHICLE\n2 20\nCUSTOMER\n0 0 0 0 0 10 0\n2 1 1 1 0 10 0\n",
                "expected customer number 1",
            ),
            (
                "X\nVEHICLE\n2 20\nCUSTOMER\n0 0 0 0 0 10 0\n1 1 1 1 20 10 0\n",
                "after due date",
            ),
            (
                "X\nVEHICLE\n2 20\nCUSTOMER\n0 0 0 0 0 10 0\n1 1 1 -1 0 10 0\n",
                ">= 0",
            ),
            (
                "X\nVEHICLE\n2 20\nCUSTOMER\n0 0 0 0 0 10 0\n",
                "at least one customer",
            ),
            (
                "X\nVEHICLE\n2 20\nCUSTOMER\n0 0 0 0 0 10 0\n1 1 1 1 0 10 0\ntrailing words\n",
                "unexpected text",
            ),
            (
                "X\nVEHICLE\n2 20\nCUSTOMER\n0 0 0 0 0 10 0\n1 1 1 1 0 inf 0\n",
                "out of range",
            ),
        ];
        for (text, needle) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
        let too_many = (0..=MAX_CUSTOMERS + 1)
            .map(|i| format!("{i} 1 1 1 0 10 0\n"))
            .fold(String::from("X\nVEHICLE\n2 20\nCUSTOMER\n"), |acc, row| {
                acc + &row
            });
        assert!(parse(&too_many)
            .unwrap_err()
            .to_string()
            .contains("more than 2000 customers"));
    }

    #[test]
    fn parses_every_shipped_instance() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/data/vrptw");
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "txt") {
                let text = std::fs::read_to_string(&path).unwrap();
                let inst = parse(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
                assert_eq!(inst.customers.len(), 101, "{}", path.display());
                inst.to_problem().unwrap();
            }
        }
    }
}
