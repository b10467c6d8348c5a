"""Graph workloads: sending in lanes, looking users up, reading back what Graph shows."""
