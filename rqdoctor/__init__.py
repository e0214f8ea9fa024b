"""rqdoctor: a doctor for hung and stuck RQ workers, first of all on Frappe/ERPNext benches."""

__version__ = "0.1.0"
