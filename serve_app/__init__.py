"""serve_app"""
