//! Exact brute-force search: for small collections, small filtered subsets, and
//! as the ground truth in tests.

use std::collections::HashMap;

use roaring::RoaringBitmap;

use crate::distance::Space;
use crate::topk::TopK;
use crate::{Neighbor, Result};

/// Labelled vectors in one contiguous buffer.
#[derive(Debug, Clone)]
pub struct FlatIndex {
    space: Space,
    dim: usize,
    labels: Vec<u32>,
    data: Vec<f32>,
    pos: HashMap<u32, usize>,
}

impl FlatIndex {
    pub fn new(space: Space, dim: usize) -> Self {
        FlatIndex {
            space,
            dim,
            labels: Vec::new(),
            data: Vec::new(),
            pos: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Inserts or replaces the vector for `label`.
    pub fn insert(&mut self, label: u32, v: &[f32]) -> Result<()> {
        crate::check_vector(self.dim, v)?;
        let v = self.space.prepare(v);
        match self.pos.get(&label) {
            Some(&i) => self.data[i * self.dim..(i + 1) * self.dim].copy_from_slice(&v),
            None => {
                self.pos.insert(label, self.labels.len());
                self.labels.push(label);
                self.data.extend_from_slice(&v);
            }
        }
        Ok(())
    }

    pub fn remove(&mut self, label: u32) -> bool {
        let Some(i) = self.pos.remove(&label) else {
            return false;
        };
        let last = self.labels.len() - 1;
        if i != last {
            let moved = self.labels[last];
            self.labels[i] = moved;
            self.pos.insert(moved, i);
            let (head, tail) = self.data.split_at_mut(last * self.dim);
            head[i * self.dim..(i + 1) * self.dim].copy_from_slice(&tail[..self.dim]);
        }
        self.labels.pop();
        self.data.truncate(last * self.dim);
        true
    }

    /// The `k` nearest labels (ties broken by smaller label), optionally among `allow`.
    pub fn search(
        &self,
        q: &[f32],
        k: usize,
        allow: Option<&RoaringBitmap>,
    ) -> Result<Vec<Neighbor>> {
        crate::check_vector(self.dim, q)?;
        let q = self.space.prepare(q);
        let mut top = TopK::new(k);
        match allow {
            Some(a) if (a.len() as usize) < self.labels.len() / 4 => {
                for label in a {
                    if let Some(&i) = self.pos.get(&label) {
                        top.push(self.space.distance(&q, self.row(i)), label);
                    }
                }
            }
            _ => {
                for (i, &label) in self.labels.iter().enumerate() {
                    if allow.is_none_or(|a| a.contains(label)) {
                        top.push(self.space.distance(&q, self.row(i)), label);
                    }
                }
            }
        }
        Ok(top.into_sorted())
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}
