"""trait-audit: estimate whether a teacher-generated dataset would carry the teacher's hidden traits into a student."""

__version__ = "0.1.0"
