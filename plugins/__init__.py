"""vmemlab's built-in policies. Each is registered through the ``vmemlab.policies`` entry-point
group exactly like a third party's."""
