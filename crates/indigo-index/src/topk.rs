//! A bounded max-heap keeping the k smallest (distance, label) pairs.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::Neighbor;

/// Orders by distance (total order on f32), then by id.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Scored {
    pub dist: f32,
    pub id: u32,
}

impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.dist
            .total_cmp(&other.dist)
            .then(self.id.cmp(&other.id))
    }
}

pub(crate) struct TopK {
    k: usize,
    heap: BinaryHeap<Scored>,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }
    #[inline]
    pub fn push(&mut self, dist: f32, id: u32) {
        if self.k == 0 {
            return;
        }
        let s = Scored { dist, id };
        if self.heap.len() < self.k {
            self.heap.push(s);
        } else if s < *self.heap.peek().unwrap() {
            self.heap.pop();
            self.heap.push(s);
        }
    }
    pub fn into_sorted(self) -> Vec<Neighbor> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|s| Neighbor {
                label: s.id,
                distance: s.dist,
            })
            .collect()
    }
}
