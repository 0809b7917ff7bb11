"""enhance"""
